"""A GGUF file's tensor table, read fast, with the tensors memory-mapped.

gguf-py's ``GGUFReader`` turns every metadata value into numpy views, one per string: for a
262,144-token vocabulary (Gemma 3) that took 20 s a parse, and a load parsed the file three
times. Here the metadata is skipped with ``struct`` (only the architecture and the alignment
are kept), the tensor table is read, and each tensor's bytes are a view of one ``np.memmap``.
The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
_STRING, _ARRAY = 8, 9


@dataclass
class Tensor:
    """What gguf-py's ``ReaderTensor`` offers that the loader uses."""

    name: str
    shape: tuple[int, ...]  # ggml's order: the fastest dimension first
    tensor_type: Any  # gguf.GGMLQuantizationType
    n_elements: int
    n_bytes: int
    data_offset: int  # from the start of the file
    data: np.ndarray  # uint8 [rows, row_bytes] for quantized types, else the values in ggml's order


class GGUFFile:
    def __init__(self, path: Path) -> None:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = path
        self.map = np.memmap(path, dtype=np.uint8, mode="r")
        buf = memoryview(self.map)  # type: ignore[arg-type]
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path} is not a GGUF file (version 2 or later)")
        pos = 24
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key, pos = _string(buf, pos)
            (kind,), pos = struct.unpack_from("<I", buf, pos), pos + 4
            value, pos = _value(buf, pos, kind, keep=key in ("general.architecture", "general.alignment"))
            if value is not None:
                self.metadata[key] = value
        infos = []
        for _ in range(n_tensors):
            name, pos = _string(buf, pos)
            (dims,), pos = struct.unpack_from("<I", buf, pos), pos + 4
            shape = struct.unpack_from(f"<{dims}Q", buf, pos)
            pos += 8 * dims
            kind, offset = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            infos.append((name, tuple(int(d) for d in shape), kind, offset))
        alignment = int(self.metadata.get("general.alignment", 32))
        start = -(-pos // alignment) * alignment
        self.tensors: dict[str, Tensor] = {}
        for name, shape, kind, offset in infos:
            qtype = GGMLQuantizationType(kind)
            block, size = GGML_QUANT_SIZES[qtype]
            elements = int(np.prod(shape))
            n_bytes = elements // block * size
            raw = self.map[start + offset : start + offset + n_bytes]
            if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
                data = raw.view(np.float32 if qtype == GGMLQuantizationType.F32 else np.float16)
                data = data.reshape(tuple(reversed(shape)))
            else:
                rows = elements // shape[0]
                data = raw.reshape(rows, -1)
            self.tensors[name] = Tensor(name, shape, qtype, elements, n_bytes, start + offset, data)

    @property
    def architecture(self) -> str:
        return str(self.metadata["general.architecture"])


@lru_cache(maxsize=4)
def _open(path: str, mtime_ns: int, size: int) -> GGUFFile:
    return GGUFFile(Path(path))


def open_gguf(path: Path) -> GGUFFile:
    """The parsed file, shared while it is unchanged (a load reads it for its plan and weights)."""
    stat = path.stat()
    return _open(str(path), stat.st_mtime_ns, stat.st_size)


def _string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8 : pos + 8 + n]).decode("utf-8", "replace"), pos + 8 + n


def _value(buf: memoryview, pos: int, kind: int, keep: bool) -> tuple[Any, int]:
    """The value at ``pos`` (None unless ``keep``) and the position after it."""
    if kind in _SCALARS:
        size = _SCALARS[kind]
        if not keep:
            return None, pos + size
        fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}[kind]
        return struct.unpack_from("<" + fmt, buf, pos)[0], pos + size
    if kind == _STRING:
        text, end = _string(buf, pos)
        return (text if keep else None), end
    if kind == _ARRAY:
        element, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if element in _SCALARS:
            return None, pos + count * _SCALARS[element]
        for _ in range(count):
            _, pos = _value(buf, pos, element, keep=False)
        return None, pos
    raise ValueError(f"unknown GGUF value type {kind}")
