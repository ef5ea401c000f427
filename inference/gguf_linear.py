"""Linears and embeddings over a GGUF's own blocks.

Few-row steps (decode) multiply by the file's blocks in place (``kernels/gguf_blocks.c``:
the activations quantized to 8 bits once per row, integer dot products per block, as
llama.cpp does), so a token reads each weight in its own bytes: about 0.56 bytes a weight for
Q4_K instead of 2 in bf16. Many-row steps (prompts, big batches) run dense GEMM on the weights
dequantized: kept once where the whole model's dense copy fits ``INFERENCE_DENSE_COPY_MB``,
else dequantized per call (a chunk of hundreds of rows pays that back many times over); the
row count where the kernel stops winning is measured at load (``quant.calibrate``).
Types without a kernel are dequantized to the compute dtype, and the load log says so.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .layers import Concat
from .quant import DenseLinear, HybridLinear, dense_linear

if TYPE_CHECKING:
    from .gguf_weights import GGUFWeights
    from .layers import Linear
    from .models import Builder

logger = logging.getLogger(__name__)


class Blocks:
    """One weight's blocks: ``data`` uint8 ``[N, row_bytes]`` (rows in Hugging Face order)."""

    def __init__(self, type_id: int, type_name: str, data: torch.Tensor, n: int, k: int) -> None:
        self.type_id, self.type_name, self.data, self.n, self.k = type_id, type_name, data, n, k


class DequantizeOnCall:
    """``x @ W.T`` for many rows, the weight dequantized from its blocks for this call only."""

    def __init__(self, kernels: Any, blocks: Blocks, dtype: torch.dtype) -> None:
        self.kernels, self.blocks, self.dtype = kernels, blocks, dtype
        self.out_features, self.in_features = blocks.n, blocks.k

    def weight(self) -> torch.Tensor:
        b = self.blocks
        return self.kernels.dequantize(b.type_id, b.data, b.n, b.k, self.dtype)  # type: ignore[no-any-return]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return dense_linear(x, self.weight())


class BlockLinear:
    """The few-row kernel over ``blocks`` (see ``kernels.GGUFBlocks.bind``)."""

    def __init__(self, kernels: Any, blocks: Blocks) -> None:
        self.blocks = blocks
        self.call = kernels.bind(blocks.type_id, blocks.data, blocks.n, blocks.k)
        self.out_features, self.in_features = blocks.n, blocks.k

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(x)  # type: ignore[no-any-return]


class BlockEmbedding:
    """Token embeddings looked up in their blocks: only the step's rows are dequantized."""

    def __init__(self, kernels: Any, blocks: Blocks, dtype: torch.dtype) -> None:
        self.kernels, self.blocks, self.dtype = kernels, blocks, dtype

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:  # [T] -> [T, H]
        b = self.blocks
        return self.kernels.dequantize(b.type_id, b.data, b.n, b.k, self.dtype,  # type: ignore[no-any-return]
                                       rows=ids.to(torch.int64).contiguous())


def read_blocks(weights: GGUFWeights, name: str, kernels: Any) -> Blocks | None:
    """The blocks of ``name`` where the kernel takes their type, else None."""
    if kernels is None or not weights.has(name):
        return None
    t = weights.tensor(name)
    type_id = int(t.tensor_type)
    if not kernels.supports(type_id):
        return None
    k, n = (int(d) for d in t.shape[:2]) if len(t.shape) >= 2 else (0, 0)
    elems, _ = kernels.block_info(type_id)
    if n == 0 or k % elems:
        return None
    data = np.asarray(t.data).reshape(n, -1)
    order = weights.row_order(name, n)
    if order is not None:
        data = data[order]
    return Blocks(type_id, t.tensor_type.name, torch.from_numpy(np.array(data, dtype=np.uint8)), n, k)


def gguf_linear(weights: GGUFWeights, names: list[str], build: Builder) -> Linear | None:
    """A linear over the blocks of ``names`` (concatenated along outputs: blocks of one type
    share one kernel call, mixed types one call each); None where a part has no kernel (the
    builder then makes it from the dequantized weights)."""
    kernels = getattr(build.native, "gguf_blocks", None) if build.linear_kind == "gguf" else None
    parts = [read_blocks(weights, name, kernels) for name in names]
    if not parts or any(p is None for p in parts):
        missing = [weights.tensor(n).tensor_type.name for n, p in zip(names, parts)
                   if p is None and weights.has(n)]
        if kernels is not None and missing:
            build.notes.add(f"{'/'.join(sorted(set(missing)))} dequantized to {str(build.dtype).split('.')[-1]}"
                            " (no kernel)")
        return None
    blocks: list[Blocks] = [p for p in parts if p is not None]
    if len({b.type_id for b in blocks}) == 1 and len(blocks) > 1:
        first = blocks[0]
        blocks = [Blocks(first.type_id, first.type_name, torch.cat([b.data for b in blocks]),
                         sum(b.n for b in blocks), first.k)]
    linears: list[Linear] = [_hybrid(kernels, b, build) for b in blocks]
    for b in blocks:
        build.notes.add(b.type_name)
    return linears[0] if len(linears) == 1 else Concat(linears)


def _hybrid(kernels: Any, blocks: Blocks, build: Builder) -> HybridLinear:
    on_call = DequantizeOnCall(kernels, blocks, build.dtype)
    dense: Any = DenseLinear(on_call.weight()) if build.keep_dense_copies else on_call
    return HybridLinear(BlockLinear(kernels, blocks), dense)


def gguf_embedding(weights: GGUFWeights, name: str, build: Builder) -> BlockEmbedding | None:
    kernels = getattr(build.native, "gguf_blocks", None) if build.linear_kind == "gguf" else None
    blocks = read_blocks(weights, name, kernels)
    return None if blocks is None else BlockEmbedding(kernels, blocks, build.dtype)
