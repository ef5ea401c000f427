"""Linear layers as the device runs them best: dense, or weight-only int8/int4 kernels.

One-stream decode on a CPU is bound by the bytes of weights read per token, so a few rows
go through weight-only kernels (torch's int8 per output channel, or int4 in groups of 32
with a scale and a zero, exactly the layout of a GGUF ``Q4_1`` block: our own kernel where
it is built, else torch's). Those kernels
lose to dense bf16 GEMM once there are many rows (prefill, big batches), so a
``HybridLinear`` keeps both and picks per call by row count; the crossover is measured
on this machine when the model loads (``calibrate``), never assumed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .kernels import Int4Linear as NativeInt4

logger = logging.getLogger(__name__)

INT4_GROUP_SIZE = 32


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16
    matmuls are emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bucket_rows(m: int) -> int:
    """``m`` rounded up to one of a few sizes: itself up to 32, then 4 sizes per doubling
    (40, 48, 56, 64, 80, ...), so at most a quarter of the rows are padding."""
    if m <= 32:
        return m
    step = 1 << (m.bit_length() - 3)
    return -(-m // step) * step


def dense_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ W.T``. On a CPU the rows are padded to ``bucket_rows``: a reduced-precision GEMM
    there runs through oneDNN, which compiles and keeps a kernel for every new row count, and a
    server sees every count up to its prefill chunk (measured: 800 distinct counts held 700 MB
    for good, and a few minutes of traffic grew the server by hundreds of MB)."""
    m = x.shape[0]
    rows = bucket_rows(m) if x.device.type == "cpu" else m
    if rows == m:
        return F.linear(x, weight)
    return F.linear(F.pad(x, (0, 0, 0, rows - m)), weight)[:m]


_LINEAR_POINTWISE: Any = getattr(getattr(torch.ops.mkldnn, "_linear_pointwise", None), "default", None)


def pack_for_onednn(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (bf16 ``[N, K]`` on a CPU) reordered once into oneDNN's blocked layout, or
    None where that does not apply. ``F.linear`` reorders the plain weight on every call;
    the packed one skips that. Measured on 2 AVX512-BF16 cores, microseconds, rows 1 / 16 / 2048:
    960x576 59 -> 29, 115 -> 67, 5950 -> 5568; 3072x576 190 -> 62, 286 -> 154, 21028 -> 17581;
    the 49152x576 head at 16 rows 6680 -> 3067. Same numbers bit for bit."""
    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16 or _LINEAR_POINTWISE is None:
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, 16)
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return None


def packed_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` with ``packed`` from ``pack_for_onednn``, rows padded as in ``dense_linear``."""
    m = x.shape[0]
    rows = bucket_rows(m)
    if rows != m:
        x = F.pad(x, (0, 0, 0, rows - m))
    out = _LINEAR_POINTWISE(x, packed, None, "none", [], "")
    return out if rows == m else out[:m]


class DenseLinear:
    """``x @ W.T`` with a dense weight ``[N, K]`` in the compute dtype: packed for oneDNN
    where that applies (``weight`` is then None: the plain copy is dropped)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.out_features, self.in_features = weight.shape
        self.packed = pack_for_onednn(weight)
        self.weight: torch.Tensor | None = None if self.packed is not None else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [M, K] -> [M, N]
        if self.packed is not None:
            return packed_linear(x, self.packed)
        assert self.weight is not None
        return dense_linear(x, self.weight)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: ``(q [N, K] int8, scales [N])``."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-10)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def quantize_int4(weight: torch.Tensor,
                  group_size: int = INT4_GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 in groups along K: ``(q [N, K] in 0..15, scales, mins [N, K/g])``.

    With min/max per group this recovers a GGUF ``Q4_1`` block exactly (its minimum
    quantizes to 0 and its maximum to 15), so dequantized Q4_1 weights lose nothing more.
    """
    n, k = weight.shape
    w = weight.float().view(n, k // group_size, group_size)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-10)
    q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
    return q.view(n, k), scales, lo


class Int8Linear:
    """Weight-only int8 (``aten._weight_int8pack_mm``); activations in bf16."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype) -> None:
        q, scales = quantize_int8(weight)
        self.qweight = q.contiguous()
        self.scales = scales.to(dtype)
        self.out_features, self.in_features = weight.shape
        self.dequantized = q.float() * scales[:, None]  # float32, as the kernel sees it (dropped after load)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x.contiguous(), self.qweight, self.scales)


class Int4Linear:
    """Weight-only int4 in groups of 32: the native kernel (``kernels/int4_linear.c``) where it
    is built and the shape fits, else ``aten._weight_int4pack_mm_for_cpu``. The native one
    keeps the scales and minimums in float16 (a GGUF's own precision; torch's kernel rounds
    them to bf16) and shares the outputs evenly between threads; a one-row decode token took
    4.0-4.25 ms on it against 4.8-5.0 on torch's (``docs/architecture.md``)."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, native: NativeInt4 | None = None) -> None:
        n, k = weight.shape
        q, scales, lo = quantize_int4(weight)
        self.out_features, self.in_features = n, k
        self.native = native if native is not None and dtype == torch.bfloat16 and native.fits(n, k) else None
        if self.native is not None:
            self.native_linear = self.native.bind(self.native.pack(q, scales, lo), n, k)
            scales, lo = self.native.rounded(scales, lo)  # the dense copy holds the same weights
        else:
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            # the kernel computes (q - 8) * scale + zero, so zero = min + 8 * scale
            zeros = lo + 8 * scales
            self.scales_and_zeros = torch.stack([scales.t(), zeros.t()], dim=-1).to(dtype).contiguous()  # [K/g, N, 2]
        groups = q.view(n, k // INT4_GROUP_SIZE, INT4_GROUP_SIZE).float()
        self.dequantized = (groups * scales[..., None] + lo[..., None]).view(n, k)  # float32 (dropped after load)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.native is not None:
            return self.native_linear(x)
        return torch._weight_int4pack_mm_for_cpu(  # the direct binding: 1.6 us a call, torch.ops 4.5
            x.contiguous(), self.packed, INT4_GROUP_SIZE, self.scales_and_zeros)


class HybridLinear:
    """A weight-only kernel for calls with at most ``max_kernel_rows`` rows, dense GEMM
    for more. Both compute the same layer; the dense copy is the quantized weight
    dequantized, so a sequence's tokens see the same weights whichever path runs."""

    def __init__(self, kernel: Callable[[torch.Tensor], torch.Tensor],
                 dense: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], max_kernel_rows: int = 4) -> None:
        self.kernel = kernel
        self.dense = DenseLinear(dense) if isinstance(dense, torch.Tensor) else dense
        self.max_kernel_rows = max_kernel_rows
        self.out_features, self.in_features = self.dense.out_features, self.dense.in_features  # type: ignore[attr-defined]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.max_kernel_rows:
            return self.kernel(x)
        return self.dense(x)


class CandidateHead:
    """The output head for a few rows: 4-bit logits pick each row's ``candidates`` likeliest
    tokens, whose logits are then computed exactly from the 8-bit weights; the other tokens
    keep their 4-bit logits. One-stream decode reads the head's weights from memory every token
    (28 MB in 8 bits for the built-in model, 14 MB in 4): measured 160 vs 137 tokens/s. A 4-bit
    head alone moved perplexity 6% off float32, since the GGUF's embedding is 8-bit; with the
    likely tokens exact, argmax and the probable tokens are the 8-bit head's. Calls with more
    than ``max_candidate_rows`` rows go through ``exact`` (kernel or dense GEMM, as calibrated)."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, candidates: int = 64,
                 native: NativeInt4 | None = None) -> None:
        self.fast = Int4Linear(weight, dtype, native)
        del self.fast.dequantized
        exact = make_linear(weight, "int8", dtype)
        assert isinstance(exact, HybridLinear) and isinstance(exact.kernel, Int8Linear)
        self.exact = exact
        self.int8: Int8Linear = exact.kernel
        self.candidates = candidates
        self.max_candidate_rows = 4
        self.out_features, self.in_features = exact.out_features, exact.in_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [M, K] -> [M, N] float32
        if x.shape[0] > self.max_candidate_rows:
            return self.exact(x).float()
        return self.candidate_logits(x)

    def candidate_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fast(x).float()
        top = logits.topk(self.candidates, dim=-1).indices  # [M, C]
        rows = self.int8.qweight[top].float()  # [M, C, K]
        exact = torch.bmm(rows, x.float()[:, :, None]).squeeze(-1) * self.int8.scales[top].float()
        return logits.scatter_(1, top, exact)


def make_linear(weight: torch.Tensor, kind: str, dtype: torch.dtype,
                native: NativeInt4 | None = None) -> DenseLinear | HybridLinear:
    """A linear layer for ``weight`` (float32 ``[N, K]``) quantized as ``kind``
    (``dense``, ``int8`` or ``int4``; ``native``: the int4 kernel built for this machine)."""
    if kind == "dense":
        return DenseLinear(weight.to(dtype).contiguous())
    if kind == "int4" and weight.shape[1] % INT4_GROUP_SIZE:
        kind = "int8"  # int4 groups need K divisible by 32
    kernel: Int8Linear | Int4Linear = (Int8Linear(weight, dtype) if kind == "int8"
                                       else Int4Linear(weight, dtype, native))
    dense = kernel.dequantized.to(dtype).contiguous()
    del kernel.dequantized
    return HybridLinear(kernel, dense)


def _race(a: Callable[[], object], b: Callable[[], object], repeats: int = 7) -> tuple[float, float]:
    """Best times of ``a`` and ``b``, run alternately: a burst of other work on the machine (a
    server starting beside the model load) slows both rather than whichever ran during it."""
    a()
    b()
    best_a = best_b = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a()
        middle = time.perf_counter()
        b()
        ended = time.perf_counter()
        best_a, best_b = min(best_a, middle - started), min(best_b, ended - middle)
    return best_a, best_b


def _crossover(kernel: Callable[[torch.Tensor], object], dense: Callable[[torch.Tensor], object], in_features: int,
               dtype: torch.dtype, max_rows: int) -> int:
    """The most rows (1, 2, 4, ... up to ``max_rows``) for which ``kernel`` beats ``dense``; 0: never."""
    best, rows = 0, 1
    while rows <= max_rows:
        x = torch.randn(rows, in_features).to(dtype)
        t_kernel, t_dense = _race(partial(kernel, x), partial(dense, x))
        if t_kernel >= t_dense:
            break
        best = rows
        rows *= 2
    return best


def _each_kernel(group: list[HybridLinear], x: torch.Tensor) -> list[torch.Tensor]:
    return [lin.kernel(x) for lin in group]


def _each_dense(group: list[HybridLinear], x: torch.Tensor) -> list[torch.Tensor]:
    return [lin.dense(x) for lin in group]


def calibrate(linears: list[HybridLinear], dtype: torch.dtype, max_rows: int = 32,
              head: CandidateHead | None = None) -> dict[tuple[int, int], int]:
    """Measure, for each distinct layer shape, up to how many rows the weight-only kernel
    beats dense GEMM here, and set ``max_kernel_rows`` accordingly; likewise where the
    candidate ``head`` beats its exact path. Returns the choice per ``(out_features, in_features)``.

    Each shape is timed over all the layers of that shape in turn, as a forward runs them: one
    layer's weights alone sit in the CPU's cache and flatter dense GEMM, which reads 2-4x the
    bytes (timed alone, oneDNN's packed 49152x576 head beat the int8 kernel at one row by a
    hair in some processes and lost by 2x in the forward)."""
    chosen: dict[tuple[int, int], int] = {}
    by_shape: dict[tuple[int, int], list[HybridLinear]] = {}
    for lin in linears:
        by_shape.setdefault((lin.out_features, lin.in_features), []).append(lin)
    with torch.inference_mode():
        for shape, group in by_shape.items():
            chosen[shape] = _crossover(partial(_each_kernel, group), partial(_each_dense, group), shape[1], dtype,
                                       max_rows)
        for lin in linears:
            lin.max_kernel_rows = chosen[(lin.out_features, lin.in_features)]
        if head is not None:
            head.max_candidate_rows = _crossover(head.candidate_logits, head.exact, head.in_features, dtype, max_rows)
    logger.info("weight-only kernels used up to rows: %s%s", chosen,
                f"; candidate head up to {head.max_candidate_rows}" if head is not None else "")
    return chosen
