"""Native CPU kernels, compiled on this machine the first time they are needed.

``decode_attention.c`` is plain C (no torch headers, so it builds in about a second) and is
called through ``ctypes`` with the tensors' pointers. It is compiled with ``-march=native``
and cached under ``cache_dir`` by a key of its source, the compiler and this CPU's flags,
so a cache copied to another machine is rebuilt rather than run. Where there is no
compiler, or the build fails, ``load_decode_attention`` returns None and the model keeps
torch's SDPA: slower, never wrong.

Why a kernel of our own: a decode step's attention is a few MFLOP, yet torch's CPU SDPA
took 0.51 ms a layer for 16 rows of 200 keys (0.45 in the kernel, 0.07 gathering the keys
out of their blocks) and 65 us for one row: a fifth of a one-stream token and a quarter of
a 16-row step, all of it per-call and per-block overhead. Reading the keys in place
through the block table, this loop takes a fraction of that (``make bench`` and
``tests/inference/test_kernels.py`` compare the two).
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
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_attention.c")
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c11"]

_lock = threading.Lock()
_loaded: dict[Path, DecodeAttention | None] = {}


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


def _build(cache_dir: Path) -> Path | None:
    cc = _compiler()
    if cc is None:
        logger.info("no C compiler: decode attention stays on torch's SDPA")
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_flags().encode(), torch.__version__.encode()])).hexdigest()[:16]
    target = cache_dir / f"decode_attention-{key}.so"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            logger.warning("building the decode attention kernel failed; using torch's SDPA:\n%s",
                           done.stderr[-2000:])
            return None
        os.replace(tmp, target)  # atomic: concurrent builders each leave a whole file
        return target
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("building the decode attention kernel failed (%s); using torch's SDPA", exc)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_P = ctypes.c_void_p
_I = ctypes.c_int64
_ARGTYPES = [_P, _I, _P, _P, _P, _I, _P, _I, _I, _I, _I, _I, ctypes.c_float, _P, ctypes.c_int]


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
                 lengths: torch.Tensor, block_size: int, out: torch.Tensor) -> torch.Tensor:
        """``q`` ``[Nd, Hq, D]`` (rows may be strided, heads contiguous); caches ``[S, Hkv, D]``
        contiguous; ``tables`` ``[Nd, B]`` and ``lengths`` ``[Nd]`` int32; ``out`` ``[Nd, Hq, D]``
        contiguous, filled and returned."""
        nd, hq, d = q.shape
        hkv = cache_k.shape[1]
        if (q.stride(2) != 1 or q.stride(1) != d or not cache_k.is_contiguous() or not cache_v.is_contiguous()
                or tables.dtype != torch.int32 or lengths.dtype != torch.int32 or not out.is_contiguous()
                or not tables.is_contiguous()):
            raise ValueError("decode attention: unexpected layout")
        status = self._functions[q.dtype](
            q.data_ptr(), q.stride(0), cache_k.data_ptr(), cache_v.data_ptr(), tables.data_ptr(),
            tables.shape[1], lengths.data_ptr(), nd, hq, hkv, d, block_size, d ** -0.5, out.data_ptr(),
            torch.get_num_threads())
        if status:
            raise RuntimeError(f"decode attention kernel failed (status {status})")
        return out


def load_decode_attention(cache_dir: Path) -> DecodeAttention | None:
    """The kernel built for this machine (once per cache directory and process), or None."""
    if sys.platform == "win32":
        return None
    with _lock:
        if cache_dir in _loaded:
            return _loaded[cache_dir]
        kernel = None
        path = _build(cache_dir)
        if path is not None:
            try:
                kernel = DecodeAttention(ctypes.CDLL(str(path)))
            except (OSError, AttributeError) as exc:
                logger.warning("loading %s failed (%s); using torch's SDPA", path, exc)
        _loaded[cache_dir] = kernel
        return kernel
