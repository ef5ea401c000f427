"""The parts a decoder is built from (nano-vllm's ``layers/``): norms, rotary embeddings,
attention over the paged KV cache, gated MLPs and linears. Each part decides once, when it is
built, whether it runs a native kernel (``inference/kernels``) or torch's ops, so a family file
under ``inference/models`` never branches on the machine."""
from __future__ import annotations

from .attention import Attention, AttentionBatch, PrefillRow
from .linear import Biased, Concat, Linear
from .mlp import GatedMLP
from .norm import RMSNorm
from .rotary import Rotary

__all__ = ["Attention", "AttentionBatch", "Biased", "Concat", "GatedMLP", "Linear", "PrefillRow", "RMSNorm",
           "Rotary"]
