"""Any architecture transformers can load, through its own model classes (vLLM's Transformers
backend, in its simplest form): correct first. Each scheduled sequence runs on its own with a
transformers ``DynamicCache`` kept between its steps, so decoding costs one token a step; a
sequence whose cache is missing (a prefix-cache hit, an eviction) is recomputed from its
first token. The engine above (scheduler, sampling, stops, grammars, logprobs, cancellation)
is the same as for the native families; the paged KV cache is not used."""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch

from .base import ModelArgs

if TYPE_CHECKING:
    from ..layers import Linear
    from ..scheduler import ScheduledSeq


class TransformersModel:
    runs_whole_sequences = True  # the runner hands it sequences instead of an AttentionBatch
    decode_attention = None

    def __init__(self, model: Any, args: ModelArgs, dtype: torch.dtype, device: str, max_cached: int = 64) -> None:
        self.model, self.args, self.dtype, self.device = model.eval(), args, dtype, device
        self.max_cached = max_cached  # sequences whose transformers cache is kept (least recently run go first)
        self._caches: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5.x

    def linears(self) -> list[Linear]:
        return []

    @torch.inference_mode()
    def forward_scheduled(self, scheduled: list[ScheduledSeq]) -> list[torch.Tensor]:
        """Logits ``[V]`` (float32) after each ``scheduled`` sequence's ``end`` position."""
        out = []
        for s in scheduled:
            key = s.seq.request_id
            cache, length = self._caches.pop(key, (None, 0))
            start = s.start
            if cache is None or length != start:  # no cache of exactly its past: from the start
                from transformers import DynamicCache

                cache, start = DynamicCache(), 0
            ids = torch.tensor([s.seq.all_token_ids[start : s.end]], device=self.device)
            result = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: cache})
            self._caches[key] = (cache, s.end)  # filled in place
            while len(self._caches) > self.max_cached:
                self._caches.popitem(last=False)
            out.append(result.logits[0, -1].float())
        return out


def load_transformers_model(source: Any, config: Any, dtype: torch.dtype, device: str,
                            gguf_file: str | None = None) -> TransformersModel:
    """``source``: a checkpoint folder, or the folder of ``gguf_file`` (dequantized by transformers)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    model = model.to(device)
    return TransformersModel(model, ModelArgs.from_hf_config(config), dtype, device)
