"""A GGUF file's tensors read in place (gguf-py, memory-mapped), under Hugging Face names.

No dense copy of the model is made on disk or in memory: each tensor is dequantized when a
part asks for it (norms, biases, embeddings, weights without a kernel), and linears whose
blocks have a kernel keep the file's own bytes (``inference/gguf_linear.py``). The names and
the two conversions llama.cpp applies when it writes a file are undone here, as
transformers' GGUF loader does: Llama's Q and K rows are interleaved for its rope, and
Gemma's norm weights are stored plus one.
"""
from __future__ import annotations

import mmap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .gguf_file import open_gguf

if TYPE_CHECKING:
    from .layers import Linear
    from .models import Builder


class GGUFWeights:
    """``Weights`` (see ``inference/models/base.py``) over a GGUF file."""

    def __init__(self, path: Path, config: Any) -> None:
        from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

        self.path = path
        self.file = open_gguf(path)  # np.memmap: tensors are read when touched
        self.tensors = self.file.tensors
        self.architecture = self.file.architecture
        arch = next((k for k, v in MODEL_ARCH_NAMES.items() if v == self.architecture), None)
        if arch is None:
            raise ValueError(f"unknown GGUF architecture {self.architecture!r}")
        self.names = get_tensor_name_map(arch, config.num_hidden_layers)
        self.config = config
        self.interleaved_qk = self.architecture == "llama"  # llama.cpp permutes Q/K rows of Llama only
        self.norm_plus_one = self.architecture in ("gemma", "gemma2", "gemma3")

    def gguf_name(self, name: str) -> str | None:
        base, suffix = name.rsplit(".", 1)
        mapped = self.names.get_name(base)
        return f"{mapped}.{suffix}" if mapped else None

    def tensor(self, name: str) -> Any:
        """The gguf-py tensor of Hugging Face ``name``; KeyError when the file has none."""
        mapped = self.gguf_name(name)
        if mapped is None or mapped not in self.tensors:
            raise KeyError(name)
        return self.tensors[mapped]

    def has(self, name: str) -> bool:
        mapped = self.gguf_name(name)
        return mapped is not None and mapped in self.tensors

    def row_order(self, name: str, rows: int) -> np.ndarray | None:
        """The permutation that restores Hugging Face's row order of a Llama Q or K weight
        (None for any other tensor): rows are whole blocks, so it applies to quantized bytes too."""
        if not self.interleaved_qk or not name.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias",
                                                            "k_proj.bias")):
            return None
        heads = self.config.num_attention_heads
        if "k_proj" in name:
            heads = getattr(self.config, "num_key_value_heads", None) or heads
        return np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(-1)

    def dense(self, name: str) -> torch.Tensor:
        from gguf import GGMLQuantizationType, dequantize

        t = self.tensor(name)
        shape = tuple(int(n) for n in reversed(t.shape))  # ggml lists the fastest dimension first
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            array = np.asarray(t.data, dtype=np.float32).reshape(shape)
        else:
            array = dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        order = self.row_order(name, shape[0])
        if order is not None:
            array = array[order]
        weight = torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: the map is read-only
        if self.norm_plus_one and "norm" in name:
            weight = weight - 1
        return weight

    def linear(self, names: list[str], build: Builder) -> Linear | None:
        from .gguf_linear import gguf_linear

        made = gguf_linear(self, names, build)
        for name in names:
            self.release(name)
        return made

    def embedding(self, name: str, build: Builder) -> Callable[[torch.Tensor], torch.Tensor] | None:
        from .gguf_linear import gguf_embedding

        made = gguf_embedding(self, name, build)
        self.release(name)
        return made

    def release(self, name: str) -> None:
        """Drop the mapped pages of ``name`` from this process once its bytes are copied: the
        file stays in the page cache, but a load's peak memory stays near the file's size
        instead of twice it."""
        if not self.has(name):
            return
        t = self.tensor(name)
        backing = getattr(self.file.map, "_mmap", None)
        if backing is None or not hasattr(backing, "madvise"):
            return
        page = mmap.PAGESIZE
        start = int(t.data_offset) // page * page
        end = int(t.data_offset) + int(t.n_bytes)
        try:
            backing.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass
