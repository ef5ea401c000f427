"""The C allocator under torch's CPU tensors (glibc malloc on Linux).

Two of its defaults hurt a server that allocates many short-lived tensors of changing sizes
from several threads:

- The mmap threshold adapts: a freed mmapped chunk raises it (up to 32 MB), so the same tensor
  size is sometimes a fresh ``mmap`` that page-faults on every use (measured: a batched decode
  attention step 3x slower before the threshold had grown than after) and sometimes heap memory.
  A fixed threshold makes step times stable: tensors up to it reuse heap memory.
- Freed heap memory inside an arena is kept, and every thread that allocates gets an arena of
  its own (Django runs sync code on a pool of threads), so a process's RSS ratchets up with
  traffic. ``release()`` hands free pages back to the kernel; the engine calls it every few
  seconds while it works and when it goes idle.

Elsewhere (macOS, musl, Windows) both are no-ops.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own ceiling for the adaptive threshold
ARENA_MAX = 4

_libc: ctypes.CDLL | None = None
_tuned = False


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim  # noqa: B018 - glibc only; musl lacks it
            libc.mallopt  # noqa: B018
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def tune() -> bool:
    """Fix the mmap threshold and bound the number of arenas (once per process)."""
    global _tuned
    libc = _glibc()
    if libc is None:
        return False
    if not _tuned:
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_ARENA_MAX, ARENA_MAX)
        # with the threshold fixed, glibc would otherwise trim only above 64 MB of free top memory
        ok = ok and libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
        if not ok:
            logger.warning("mallopt refused the allocator settings; RSS may grow with traffic")
        _tuned = True
    return True


def release() -> None:
    """Give free heap pages back to the kernel (``malloc_trim``); takes a few milliseconds."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
