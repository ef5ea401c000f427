"""The machine: what it is (for the banner), what other processes used meanwhile, and a
process's memory, all from ``/proc`` (Linux; None elsewhere)."""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def machine_info(num_threads: int = 0) -> dict[str, Any]:
    """CPU model, core counts, torch/transformers versions and torch threads (``num_threads``
    as the server sets them, 0: torch's default)."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return {
        "isa": ",".join(f for f in wanted if f in flags) + (f" (forced {os.environ['INFERENCE_CPU_ISA']})"
                                                            if os.environ.get("INFERENCE_CPU_ISA") else ""),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": num_threads or torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def memory_read_gbs(megabytes: int = 1024, repeats: int = 5) -> float:
    """GB/s at which this machine reads memory with torch's threads: a STREAM-like probe (the
    best of ``repeats`` sums of a ``megabytes`` buffer, far larger than any cache). One-stream
    decode reads every weight once a token, so this is its ceiling."""
    import torch

    values = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    values.sum()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        values.sum()
        best = min(best, time.perf_counter() - started)
    return values.numel() * 4 / best / 1e9


def weight_bytes_per_token(path: Path) -> int | None:
    """Bytes of weights a one-row decode step reads from the GGUF at ``path``: every matrix
    once (the output head included), the token embedding only where it is also the head."""
    try:
        from inference import open_gguf

        tensors = open_gguf(path).tensors
    except Exception:  # noqa: BLE001 - not a GGUF we can read: the figure is simply not known
        return None
    tied = "output.weight" not in tensors
    return sum(int(t.n_bytes) for name, t in tensors.items()
               if len(t.shape) >= 2 and (name != "token_embd.weight" or tied))


def parse_status_kb(text: str, key: str) -> int | None:
    """The value in kB of ``key`` (``VmRSS``, ``VmHWM``) in a ``/proc/<pid>/status`` text."""
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def memory_mb(pid: int) -> dict[str, float | None]:
    """Resident set size now and at its peak (``VmRSS``, ``VmHWM``) of ``pid``, in MB (MiB)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"rss_mb": None, "peak_mb": None}
    rss, hwm = parse_status_kb(text, "VmRSS"), parse_status_kb(text, "VmHWM")
    return {"rss_mb": None if rss is None else rss / 1024, "peak_mb": None if hwm is None else hwm / 1024}


class CpuMeter:
    """CPU used by *other* processes during a measurement.

    ``own_pids`` are the processes under test (the server, this command); everything else
    that ran meanwhile disturbed the numbers on a machine with few cores. None: unknown
    (a server whose process is not known), the meter then reports None.
    """

    def __init__(self, own_pids: Sequence[int] | None) -> None:
        self.own_pids = list(own_pids) if own_pids is not None else None
        self._start: tuple[float, int, int] | None = None

    @staticmethod
    def _busy_jiffies() -> int:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return user + nice + system + irq + softirq + steal

    @staticmethod
    def _pid_jiffies(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (all threads)

    def _own(self) -> int:
        return sum(self._pid_jiffies(pid) for pid in self.own_pids or [])

    def start(self) -> None:
        if self.own_pids is None:
            return
        try:
            self._start = (time.monotonic(), self._busy_jiffies(), self._own())
        except (OSError, ValueError, IndexError):
            self._start = None

    def stop(self) -> float | None:
        """Cores' worth of CPU the other processes used since ``start()``."""
        if self._start is None:
            return None
        try:
            elapsed = time.monotonic() - self._start[0]
            other = (self._busy_jiffies() - self._start[1]) - (self._own() - self._start[2])
        except (OSError, ValueError, IndexError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        return max(0.0, other / hz / elapsed) if elapsed > 0 else None
