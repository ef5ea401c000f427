"""Native CPU kernels, compiled on this machine the first time they are needed.

``decode_attention.c``, ``layer_ops.c``, ``int4_linear.c`` and ``gguf_blocks.c`` are plain C (no torch
headers, so they build in seconds) and are called through ``ctypes`` with the tensors' pointers. They are
compiled with ``-march=native`` (or a narrower instruction set: ``INFERENCE_CPU_ISA``) and cached under
``cache_dir`` by a key of their source, the flags, the compiler and this CPU's flags, so a cache copied to
another machine is rebuilt rather than run. Where there is no
compiler, or the build fails, ``load_native`` returns None and the model keeps
torch's SDPA: slower, never wrong.

Why a kernel of our own: a decode step's attention is a few MFLOP, yet torch's CPU SDPA
took 0.51 ms a layer for 16 rows of 200 keys (0.45 in the kernel, 0.07 gathering the keys
out of their blocks) and 65 us for one row: a fifth of a one-stream token and a quarter of
a 16-row step, all of it per-call and per-block overhead. Reading the keys in place
through the block table, this loop takes a fraction of that (``make bench`` and
``tests/inference/test_kernels.py`` compare the two). ``int4_linear.c`` multiplies a few rows
by 4-bit weights, shared evenly between the threads (``docs/architecture.md``); ``gguf_blocks.c``
multiplies a few rows by a GGUF's own blocks of every common type (llama.cpp's kernels, AVX2).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name(name)
           for name in ("decode_attention.c", "layer_ops.c", "int4_linear.c", "gguf_blocks.c")]
HEADERS = [Path(__file__).with_name("bf16.h")]  # part of the cache key, not of the command line
FLAGS = ["-O3", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
# The instruction set the kernels are built for: the machine's own, or a narrower one so that an
# AVX-512 machine runs (and tests, and benchmarks) what an AVX2 laptop or an older x86 runs.
ISAS = {"native": "-march=native", "avx2": "-march=haswell", "scalar": "-march=x86-64"}
ISA_ENV = "INFERENCE_CPU_ISA"

_lock = threading.Lock()
_loaded: dict[tuple[Path, str], NativeKernels | None] = {}


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(cache_dir: Path, isa: str = "native") -> Path | None:
    cc = _compiler()
    if cc is None:
        logger.info("no C compiler: the model runs on torch's ops alone")
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sources = [path.read_bytes() for path in SOURCES + HEADERS]
    flags = [*FLAGS, ISAS[isa]]
    key = hashlib.sha256(b"\0".join([*sources, " ".join(flags).encode(), version.encode(),
                                     _cpu_flags().encode(), torch.__version__.encode()])).hexdigest()[:16]
    target = cache_dir / f"cpu_kernels-{key}.so"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, *map(str, SOURCES), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            logger.warning("building the native kernels failed; using torch's ops:\n%s", done.stderr[-2000:])
            return None
        os.replace(tmp, target)  # atomic: concurrent builders each leave a whole file
        return target
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("building the native kernels failed (%s); using torch's ops", exc)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_P = ctypes.c_void_p
_I = ctypes.c_int64
_ARGTYPES = [_P, _I, _P, _P, _P, _I, _P, _I, _I, _I, _I, _I, ctypes.c_float, _I, ctypes.c_float, _P, ctypes.c_int]


class DecodeAttention:
    """``__call__`` attends ``nd`` single-token rows to their cached keys (see the C source)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self._functions = {}
        for dtype, name in ((torch.bfloat16, "decode_attention_bf16"), (torch.float32, "decode_attention_f32")):
            fn = getattr(library, name)
            fn.argtypes = _ARGTYPES
            fn.restype = ctypes.c_int
            self._functions[dtype] = fn

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in self._functions

    def __call__(self, q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, tables: torch.Tensor,
                 lengths: torch.Tensor, block_size: int, out: torch.Tensor, scale: float | None = None,
                 window: int = 0, softcap: float = 0.0) -> torch.Tensor:
        """``q`` ``[Nd, Hq, D]`` (rows may be strided, heads contiguous); caches ``[S, Hkv, D]``
        contiguous; ``tables`` ``[Nd, B]`` and ``lengths`` ``[Nd]`` int32; ``out`` ``[Nd, Hq, D]``
        contiguous, filled and returned. ``scale`` defaults to ``D ** -0.5``; ``window`` > 0
        reads only each row's last ``window`` keys; ``softcap`` > 0 caps the scores (Gemma 2)."""
        nd, hq, d = q.shape
        hkv = cache_k.shape[1]
        if (q.stride(2) != 1 or q.stride(1) != d or not cache_k.is_contiguous() or not cache_v.is_contiguous()
                or tables.dtype != torch.int32 or lengths.dtype != torch.int32 or not out.is_contiguous()
                or not tables.is_contiguous()):
            raise ValueError("decode attention: unexpected layout")
        status = self._functions[q.dtype](
            q.data_ptr(), q.stride(0), cache_k.data_ptr(), cache_v.data_ptr(), tables.data_ptr(),
            tables.shape[1], lengths.data_ptr(), nd, hq, hkv, d, block_size, d ** -0.5 if scale is None else scale,
            window, softcap, out.data_ptr(), torch.get_num_threads())
        if status:
            raise RuntimeError(f"decode attention kernel failed (status {status})")
        return out


def _check(status: int, name: str) -> None:
    if status:
        raise RuntimeError(f"native kernel {name} failed (status {status})")


def _rows(t: torch.Tensor) -> bool:
    """Rows may be strided; each row contiguous."""
    return t.dim() == 2 and t.stride(1) == 1


class LayerOps:
    """A block's small operations in one pass each (see ``layer_ops.c``). Each checks the
    layout it relies on and raises rather than read out of bounds."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._fns: dict[tuple[str, torch.dtype], Any] = {}
        signatures = {
            "add_rms_norm": [_P, _I, _P, _P, _P, _I, _I, ctypes.c_float, ctypes.c_int],
            "rope_store": [_P, _I, _P, _P, _P, _I, _I, _I, _P, _P, _P, ctypes.c_int],
            "silu_mul": [_P, _P, _I, _I, ctypes.c_int],
            "gelu_tanh_mul": [_P, _P, _I, _I, ctypes.c_int],
        }
        for name, argtypes in signatures.items():
            for dtype, suffix in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
                fn = getattr(library, f"{name}_{suffix}")
                fn.argtypes = argtypes
                fn.restype = ctypes.c_int
                self._fns[(name, dtype)] = fn

    def supports(self, dtype: torch.dtype) -> bool:
        return ("silu_mul", dtype) in self._fns

    def add_rms_norm(self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                     eps: float) -> torch.Tensor:
        """``x += delta`` in place (when given), then RMSNorm of ``x`` ``[T, H]`` times the first
        ``H`` values of ``weight`` (the model keeps it doubled for torch's path)."""
        rows, h = x.shape
        if delta is not None:
            delta = delta.contiguous()
        if not _rows(x) or weight.numel() < h or not weight.is_contiguous() or x.dtype != weight.dtype or (
                delta is not None and (delta.shape != x.shape or delta.dtype != x.dtype)):
            raise ValueError("add_rms_norm: unexpected layout")
        out = torch.empty((rows, h), dtype=x.dtype, device=x.device)
        _check(self._fns[("add_rms_norm", x.dtype)](
            x.data_ptr(), x.stride(0), None if delta is None else delta.data_ptr(), weight.data_ptr(),
            out.data_ptr(), rows, h, eps, torch.get_num_threads()), "add_rms_norm")
        return out

    def rope_store(self, qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   heads: tuple[int, int, int], cache_k: torch.Tensor, cache_v: torch.Tensor,
                   slots: torch.Tensor) -> None:
        """Rotate the q and k heads of ``qkv`` ``[T, (Hq + 2 Hkv) D]`` in place by ``positions``
        and write each row's k and v to its cache slot."""
        hq, hkv, d = heads
        rows = qkv.shape[0]
        if (not qkv.is_contiguous() or qkv.shape[1] != (hq + 2 * hkv) * d or positions.dtype != torch.int64
                or slots.dtype != torch.int64 or positions.numel() != rows or slots.numel() != rows
                or not positions.is_contiguous() or not slots.is_contiguous() or not cos.is_contiguous()
                or not sin.is_contiguous() or cos.shape[1] != d or not cache_k.is_contiguous()
                or not cache_v.is_contiguous() or cache_k.shape[1:] != (hkv, d)):
            raise ValueError("rope_store: unexpected layout")
        _check(self._fns[("rope_store", qkv.dtype)](
            qkv.data_ptr(), rows, positions.data_ptr(), cos.data_ptr(), sin.data_ptr(), hq, hkv, d,
            cache_k.data_ptr(), cache_v.data_ptr(), slots.data_ptr(), torch.get_num_threads()), "rope_store")

    def silu_mul(self, gu: torch.Tensor, name: str = "silu_mul") -> torch.Tensor:
        """``silu(gate) * up`` of ``gu`` ``[T, 2 I]`` (gate first) -> ``[T, I]``."""
        gu = gu.contiguous()
        rows, width = gu.shape
        if width % 2:
            raise ValueError("silu_mul: unexpected layout")
        out = torch.empty((rows, width // 2), dtype=gu.dtype, device=gu.device)
        _check(self._fns[(name, gu.dtype)](gu.data_ptr(), out.data_ptr(), rows, width // 2,
                                           torch.get_num_threads()), name)
        return out

    def gelu_tanh_mul(self, gu: torch.Tensor) -> torch.Tensor:
        """``gelu_tanh(gate) * up`` of ``gu`` ``[T, 2 I]`` (gate first) -> ``[T, I]``."""
        return self.silu_mul(gu, "gelu_tanh_mul")


class Int4Linear:
    """Weight-only 4-bit linear of a few bf16 rows (see ``int4_linear.c``): ``pack`` lays out
    a quantized weight once, ``__call__`` multiplies by it."""

    GROUP = 32
    TILE = 16

    def __init__(self, library: ctypes.CDLL) -> None:
        self._fn = library.int4_linear_bf16
        self._fn.argtypes = [_P, _I, _I, _I, _P, _P, _I, ctypes.c_int]
        self._fn.restype = ctypes.c_int
        library.int4_linear_available.restype = ctypes.c_int
        self.available = bool(library.int4_linear_available())

    def fits(self, out_features: int, in_features: int) -> bool:
        return self.available and out_features % self.TILE == 0 and in_features % self.GROUP == 0 \
            and in_features <= 16384

    def pack(self, q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
        """``q`` ``[N, K]`` in 0..15, ``scales`` and ``mins`` ``[N, K/32]`` -> the tiles, uint8
        ``[N/16, K/32, 320]``: per tile 256 bytes of nibbles, then 16 scales and 16 minimums in
        float16 (exact for a GGUF's Q4_1 blocks, whose scales and minimums are float16)."""
        n, k = q.shape
        tiles, groups = n // self.TILE, k // self.GROUP
        pairs = q.view(tiles, self.TILE, groups, self.GROUP // 2, 2).to(torch.uint8)
        nibbles = (pairs[..., 0] | (pairs[..., 1] << 4)).permute(0, 2, 3, 1).reshape(tiles, groups, -1)

        def per_tile(values: torch.Tensor) -> torch.Tensor:
            halves = values.to(torch.float16).view(tiles, self.TILE, groups).permute(0, 2, 1).contiguous()
            return halves.view(torch.uint8).view(tiles, groups, 2 * self.TILE)

        return torch.cat([nibbles, per_tile(scales), per_tile(mins)], dim=-1).contiguous()

    @staticmethod
    def rounded(scales: torch.Tensor, mins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scales and minimums as the tiles hold them (float16), in float32."""
        return scales.to(torch.float16).float(), mins.to(torch.float16).float()

    def bind(self, tiles: torch.Tensor, out_features: int, in_features: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x`` ``[M, K]`` bf16 (rows may be strided) -> ``x W^T`` ``[M, N]`` bf16, for the
        weight packed as ``tiles``. Checked here once, and ``x`` on each call."""
        if (tiles.dtype != torch.uint8 or not tiles.is_contiguous() or out_features % self.TILE
                or in_features % self.GROUP
                or tiles.shape != (out_features // self.TILE, in_features // self.GROUP, 20 * self.TILE)):
            raise ValueError("int4_linear: unexpected layout")
        fn, pointer, bf16 = self._fn, tiles.data_ptr(), torch.bfloat16

        def linear(x: torch.Tensor) -> torch.Tensor:
            if x.dtype != bf16 or x.dim() != 2 or x.shape[1] != in_features or x.stride(1) != 1:
                raise ValueError("int4_linear: unexpected layout")
            rows = x.shape[0]
            y = torch.empty((rows, out_features), dtype=bf16)
            _check(fn(x.data_ptr(), x.stride(0), rows, in_features, pointer, y.data_ptr(), out_features,
                      torch.get_num_threads()), "int4_linear")
            return y

        linear.tiles = tiles  # type: ignore[attr-defined]  # the memory ``pointer`` points into
        return linear


class GGUFBlocks:
    """Products and dequantization on a GGUF's own quantized blocks (see ``gguf_blocks.c``,
    ported from llama.cpp). ``blocks`` is a weight's bytes as the file holds them: uint8,
    contiguous, ``[n, row_bytes]`` (``n`` rows of ``k / block_elems`` blocks). Each method checks
    the layout it relies on and raises ValueError rather than read out of bounds."""

    TYPES = {2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K"}

    def __init__(self, library: ctypes.CDLL) -> None:
        info = library.gguf_block_info
        info.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)]
        info.restype = ctypes.c_int
        self._info: dict[int, tuple[int, int]] = {}
        for type_id in self.TYPES:
            elems, size = ctypes.c_int64(), ctypes.c_int64()
            if info(type_id, ctypes.byref(elems), ctypes.byref(size)) == 0:
                self._info[type_id] = (elems.value, size.value)
        self._linear: dict[torch.dtype, Any] = {}
        self._dequantize: dict[torch.dtype, Any] = {}
        for dtype, suffix in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            fn = getattr(library, f"gguf_linear_{suffix}")
            fn.argtypes = [ctypes.c_int, _P, _I, _I, _P, _I, _I, _P, ctypes.c_int]
            fn.restype = ctypes.c_int
            self._linear[dtype] = fn
            fn = getattr(library, f"gguf_dequantize_{suffix}")
            fn.argtypes = [ctypes.c_int, _P, _I, _P, _I, _P, ctypes.c_int]
            fn.restype = ctypes.c_int
            self._dequantize[dtype] = fn
        library.gguf_blocks_isa.restype = ctypes.c_char_p
        self.isa: str = library.gguf_blocks_isa().decode()

    def supports(self, type_id: int) -> bool:
        return type_id in self._info

    def block_info(self, type_id: int) -> tuple[int, int]:
        """``(elements, bytes)`` of one block of ``type_id``."""
        if type_id not in self._info:
            raise ValueError(f"gguf blocks: unsupported type {type_id}")
        return self._info[type_id]

    def _check(self, type_id: int, blocks: torch.Tensor, n: int, k: int, name: str) -> None:
        if type_id not in self._info:
            raise ValueError(f"{name}: unsupported type {type_id}")
        elems, size = self._info[type_id]
        if (n < 0 or k <= 0 or k % elems or blocks.dtype != torch.uint8 or not blocks.is_contiguous()
                or blocks.device.type != "cpu" or blocks.numel() != n * (k // elems) * size
                or (blocks.dim() == 2 and blocks.shape[0] != n) or blocks.dim() not in (1, 2)):
            raise ValueError(f"{name}: unexpected layout")

    def bind(self, type_id: int, blocks: torch.Tensor, n: int, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x`` ``[M, K]`` float32 or bfloat16 (rows may be strided) -> ``x W^T`` ``[M, N]`` in
        ``x``'s dtype, for the weight held in ``blocks``: each row of ``x`` rounded once to 8-bit
        blocks, then integer dot products per block (llama.cpp's recipe). Checked here once, and
        ``x`` on each call."""
        self._check(type_id, blocks, n, k, "gguf_linear")
        functions, pointer, cpu = self._linear, blocks.data_ptr(), torch.device("cpu")

        def linear(x: torch.Tensor) -> torch.Tensor:
            fn = functions.get(x.dtype)
            if fn is None or x.dim() != 2 or x.shape[1] != k or x.stride(1) != 1 or x.device != cpu:
                raise ValueError("gguf_linear: unexpected layout")
            rows = x.shape[0]
            y = torch.empty((rows, n), dtype=x.dtype)
            _check(fn(type_id, pointer, n, k, x.data_ptr(), x.stride(0), rows, y.data_ptr(),
                      torch.get_num_threads()), "gguf_linear")
            return y

        linear.blocks = blocks  # type: ignore[attr-defined]  # the memory ``pointer`` points into
        return linear

    def linear(self, type_id: int, blocks: torch.Tensor, n: int, k: int, x: torch.Tensor) -> torch.Tensor:
        """``x W^T`` once (``bind`` for a weight used many times)."""
        return self.bind(type_id, blocks, n, k)(x)

    def dequantize(self, type_id: int, blocks: torch.Tensor, n: int, k: int, dtype: torch.dtype,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
        """The weight's rows (all ``n``, or those of the int64 ``rows``) as ``[count, k]``
        ``dtype`` (float32 or bfloat16)."""
        self._check(type_id, blocks, n, k, "gguf_dequantize")
        fn = self._dequantize.get(dtype)
        if fn is None:
            raise ValueError(f"gguf_dequantize: unsupported dtype {dtype}")
        if rows is None:
            count, pointer = n, None
        else:
            if rows.dtype != torch.int64 or rows.dim() != 1 or rows.device.type != "cpu":
                raise ValueError("gguf_dequantize: unexpected layout")
            rows = rows.contiguous()
            count, pointer = rows.numel(), rows.data_ptr()
            if count and (int(rows.min()) < 0 or int(rows.max()) >= n):
                raise ValueError("gguf_dequantize: row out of range")
        out = torch.empty((count, k), dtype=dtype)
        _check(fn(type_id, blocks.data_ptr(), k, pointer, count, out.data_ptr(), torch.get_num_threads()),
               "gguf_dequantize")
        return out


@dataclass(frozen=True)
class NativeKernels:
    decode_attention: DecodeAttention
    layer_ops: LayerOps
    int4_linear: Int4Linear
    gguf_blocks: GGUFBlocks


def load_native(cache_dir: Path, isa: str | None = None) -> NativeKernels | None:
    """The kernels built for this machine (once per cache directory, instruction set and
    process), or None. ``isa``: ``native`` (``-march=native``), ``avx2`` (``-march=haswell``)
    or ``scalar`` (``-march=x86-64``); None reads ``INFERENCE_CPU_ISA`` (default ``native``).
    The narrower builds are for x86 machines (to run and test what an AVX2-only or an older
    CPU runs); elsewhere they fail to build and this returns None."""
    if sys.platform == "win32":
        return None
    if isa is None:
        isa = os.environ.get(ISA_ENV, "").strip().lower() or "native"
        if isa not in ISAS:
            logger.warning("%s=%r is not one of %s; building for native", ISA_ENV, isa, ", ".join(ISAS))
            isa = "native"
    elif isa not in ISAS:
        raise ValueError(f"isa must be one of {', '.join(ISAS)}, not {isa!r}")
    with _lock:
        if (cache_dir, isa) in _loaded:
            return _loaded[(cache_dir, isa)]
        kernels = None
        path = _build(cache_dir, isa)
        if path is not None:
            try:
                library = ctypes.CDLL(str(path))
                kernels = NativeKernels(DecodeAttention(library), LayerOps(library), Int4Linear(library),
                                        GGUFBlocks(library))
            except (OSError, AttributeError) as exc:
                logger.warning("loading %s failed (%s); using torch's ops", path, exc)
        _loaded[(cache_dir, isa)] = kernels
        return kernels
