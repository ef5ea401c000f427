"""What every family shares: the arguments the engine needs, the builder family files describe
their blocks with, and the decoder that runs the blocks over the paged KV cache.

Not ``nn.Module``s: no hooks, no autograd, a handful of plain tensors and callables, so
per-op overhead stays small at one decode row."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..kernels import NativeKernels
from ..layers import Attention, AttentionBatch, Biased, Concat, GatedMLP, Linear, RMSNorm, Rotary
from ..layers.rotary import inverse_frequencies


@dataclass(frozen=True)
class ModelArgs:
    """The shape the engine, the runner and the KV cache need, whatever the family."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelArgs:
        heads = config.num_attention_heads
        return cls(
            model_type=config.model_type,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            max_position_embeddings=getattr(config, "max_position_embeddings", 4096) or 4096,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def kv_bytes_per_token(self) -> int:
        """Per token, all layers, keys and values, per byte of the cache dtype."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim


class Weights(Protocol):
    """Tensors by Hugging Face name (``model.layers.0.self_attn.q_proj.weight``)."""

    def has(self, name: str) -> bool: ...

    def dense(self, name: str) -> torch.Tensor:
        """float32 on the CPU."""
        ...

    def linear(self, names: list[str], build: Builder) -> Linear | None:
        """A linear over the weights ``names`` concatenated, where the source keeps its own
        blocks (a GGUF); None: build it from ``dense``."""
        ...

    def embedding(self, name: str, build: Builder) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Token ids ``[T]`` -> ``[T, H]`` read from the source's own blocks; None: from ``dense``."""
        ...


class StateDict:
    """``Weights`` over a plain ``state_dict`` (a safetensors checkpoint)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state

    def has(self, name: str) -> bool:
        return name in self.state

    def dense(self, name: str) -> torch.Tensor:
        return self.state[name].float()

    def linear(self, names: list[str], build: Builder) -> Linear | None:
        return None

    def embedding(self, name: str, build: Builder) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return None


class Block(Protocol):
    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, batch: AttentionBatch,
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class Builder:
    """Makes the parts a family file asks for, from ``weights``, as this machine runs them
    best: every choice (kernel, block type, dtype) is made here once."""

    def __init__(self, config: Any, weights: Weights, dtype: torch.dtype, device: str,
                 make_linear: Callable[[torch.Tensor, str], Linear], linear_kind: str = "dense",
                 head_kind: str = "dense", native: NativeKernels | None = None,
                 keep_dense_copies: bool = True) -> None:
        self.config, self.weights, self.dtype, self.device = config, weights, dtype, device
        self.keep_dense_copies = keep_dense_copies  # GGUF blocks: a dense copy for many rows, or per call
        self.notes: set[str] = set()  # what the loader reports: block types served, types dequantized
        self.args = ModelArgs.from_hf_config(config)
        self.make_linear, self.linear_kind, self.head_kind = make_linear, linear_kind, head_kind
        supported = native is not None and device == "cpu" and native.layer_ops.supports(dtype)
        self.ops = native.layer_ops if supported and native is not None else None
        self.decode_kernel = native.decode_attention if supported and native is not None else None
        self.native = native
        self.linears: list[Linear] = []  # every linear made, for calibration
        self._rotary: dict[str | None, Rotary] = {}

    def linear(self, *names: str, kind: str | None = None) -> Linear:
        """The linear of the weights ``<name>.weight`` concatenated along outputs, with their
        biases where the weights have them."""
        weights = [f"{n}.weight" for n in names]
        made = self.weights.linear(weights, self) if kind is None else None
        if made is None:
            dense = [self.weights.dense(w) for w in weights]
            made = self.make_linear(dense[0] if len(dense) == 1 else torch.cat(dense), kind or self.linear_kind)
        self.linears.extend(made.parts if isinstance(made, Concat) else [made])  # each part calibrated
        biases = [f"{n}.bias" for n in names]
        if any(self.weights.has(b) for b in biases):
            parts = [self.weights.dense(b) if self.weights.has(b) else torch.zeros(0) for b in biases]
            if any(p.numel() == 0 for p in parts):  # some parts without a bias: zeros of their width
                widths = [self.weights.dense(w).shape[0] for w in weights]
                parts = [p if p.numel() else torch.zeros(n) for p, n in zip(parts, widths)]
            made = Biased(made, torch.cat(parts).to(device=self.device, dtype=self.dtype))
        return made

    def norm(self, name: str, offset: float = 0.0) -> RMSNorm:
        eps = float(getattr(self.config, "rms_norm_eps", None) or getattr(self.config, "layer_norm_eps", None) or 1e-6)
        return RMSNorm(self.weights.dense(f"{name}.weight").to(self.device), eps, self.dtype, self.ops, offset)

    def layer_type(self, i: int) -> str | None:
        types = getattr(self.config, "layer_types", None)
        return types[i] if types else None

    def window(self, i: int) -> int:
        """The sliding window of layer ``i`` (0: every key): the config's ``layer_types`` say
        which layers slide; without them (Mistral) the window applies to every layer."""
        window = getattr(self.config, "sliding_window", None) or 0
        if getattr(self.config, "layer_types", None):
            return window if self.layer_type(i) == "sliding_attention" else 0
        return window

    def rotary(self, layer_type: str | None = None) -> Rotary:
        if layer_type not in self._rotary:
            inv_freq, scaling = inverse_frequencies(self.config, self.args.head_dim, layer_type)
            self._rotary[layer_type] = Rotary(inv_freq, scaling, self.args.head_dim,
                                              self.args.max_position_embeddings, self.dtype, self.device, self.ops)
        return self._rotary[layer_type]

    def attention(self, i: int, prefix: str, qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj"),
                  o: str = "o_proj", *, qk_norm: bool = False, norm_offset: float = 0.0,
                  scale: float | None = None, softcap: float | None = None) -> Attention:
        """Layer ``i``'s attention from the projections under ``prefix`` (``qkv``: one fused
        weight or three), its rope and window from the config (keyed by layer type where the
        config has them)."""
        a = self.args
        rope_keyed = isinstance((getattr(self.config, "rope_parameters", None) or {}).get(self.layer_type(i)), dict)
        return Attention(
            self.linear(*(prefix + n for n in qkv)), self.linear(prefix + o),
            (a.num_attention_heads, a.num_key_value_heads, a.head_dim),
            self.rotary(self.layer_type(i) if rope_keyed else None),
            scale=scale, window=self.window(i), softcap=softcap or 0.0,
            q_norm=self.norm(prefix + "q_norm", norm_offset) if qk_norm else None,
            k_norm=self.norm(prefix + "k_norm", norm_offset) if qk_norm else None,
            decode_kernel=self.decode_kernel,
        )

    def mlp(self, prefix: str, gate_up: tuple[str, ...] = ("gate_proj", "up_proj"), down: str = "down_proj",
            activation: str | None = None) -> GatedMLP:
        act = activation or getattr(self.config, "hidden_activation", None) or self.config.hidden_act
        return GatedMLP(self.linear(*(prefix + n for n in gate_up)), self.linear(prefix + down), act, self.ops,
                        self.dtype)

    def decoder(self, block: Callable[[Builder, int], Block], *, norm_offset: float = 0.0,
                embed_scale: float | None = None, final_softcap: float | None = None) -> DecoderModel:
        """The whole model: embeddings, ``block(self, i)`` for each layer, the final norm and head."""
        blocks = [block(self, i) for i in range(self.args.num_hidden_layers)]
        name = "model.embed_tokens.weight"
        tied = self.args.tie_word_embeddings or not self.weights.has("lm_head.weight")
        head_name = name if tied else "lm_head.weight"
        head = self.weights.linear([head_name], self) if self.head_kind != "dense" else None
        if head is not None:
            self.linears.append(head)
        embed: Any = self.weights.embedding(name, self)
        if embed is None:
            dense = self.weights.dense(name)
            if head is None:
                head = self.head(dense if tied else self.weights.dense(head_name))
            embed = dense.to(device=self.device, dtype=self.dtype)
        elif head is None:
            head = self.head(self.weights.dense(head_name))
        return DecoderModel(self.args, embed, blocks, self.norm("model.norm", norm_offset), head, self.dtype,
                            self.device, embed_scale=embed_scale, final_softcap=final_softcap,
                            linears=self.linears)

    def head(self, weight: torch.Tensor) -> Linear:
        from ..quant import CandidateHead, DenseLinear

        if self.head_kind == "int4+int8":
            return CandidateHead(weight, self.dtype, native=self.native.int4_linear if self.native else None)
        if self.head_kind == "dense":
            return DenseLinear(weight.to(device=self.device, dtype=self.dtype).contiguous())
        return self.make_linear(weight, self.head_kind)


class DecoderModel:
    """Embeddings, blocks, final norm and head, run over the paged KV cache."""

    def __init__(self, args: ModelArgs, embed: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
                 blocks: list[Block], norm: RMSNorm, head: Linear,
                 dtype: torch.dtype, device: str, *, embed_scale: float | None = None,
                 final_softcap: float | None = None, linears: list[Linear] | None = None) -> None:
        self.args, self.embed, self.blocks, self.norm, self.head = args, embed, blocks, norm, head
        self.dtype, self.device = dtype, device
        # Gemma scales embeddings by sqrt(hidden), rounded to the compute dtype as transformers does
        self.embed_scale = None if embed_scale is None else torch.tensor(embed_scale, dtype=dtype).item()
        self.final_softcap = final_softcap
        self._linears = linears or []
        self._kv_views: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self.decode_attention = next((b.attn.decode_kernel for b in blocks if hasattr(b, "attn")), None)

    def linears(self) -> list[Linear]:
        return list(self._linears)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, batch: AttentionBatch, kv: torch.Tensor) -> torch.Tensor:
        """Compute ``input_ids`` ``[T]``; write their keys/values into ``kv``
        ``[L, 2, num_slots, Hkv, D]``; return logits ``[R, V]`` (float32) of the tokens
        in ``batch.logits_index``."""
        if self._kv_views is None or self._kv_views[0] is not kv:  # each layer's [S, Hkv, D] views, once
            self._kv_views = (kv, [(kv[i, 0], kv[i, 1]) for i in range(len(self.blocks))])
        x = F.embedding(input_ids, self.embed) if isinstance(self.embed, torch.Tensor) else self.embed(input_ids)
        if self.embed_scale is not None:
            x = x * self.embed_scale
        residual: torch.Tensor | None = None
        for block, (cache_k, cache_v) in zip(self.blocks, self._kv_views[1]):
            x, residual = block(x, residual, batch, cache_k, cache_v)
        if batch.logits_index is not None and batch.logits_index.numel() == 0:  # a chunk mid-prompt
            return x.new_empty((0, self.args.vocab_size), dtype=torch.float32)
        assert residual is not None
        h = residual + x
        last = h[batch.logits_index] if batch.logits_index is not None else h[-1:]
        logits = self.head(self.norm(last)[0]).float()  # [R, V]
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits
