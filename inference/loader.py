"""Build a ready-to-run model and tokenizer from a ``ModelSpec``.

GGUF sources are dequantized by transformers once and cached as a safetensors
checkpoint under ``MODEL_CACHE_DIR``, so later loads take a fraction of a second and
quantizers (bitsandbytes) can work from dense weights.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .catalog import ModelSpec, hf_local_snapshot, package_file
from .config import InferenceSettings, resolve_device
from .kernels import load_native
from .model import LlamaArgs, LlamaModel
from .quant import CandidateHead, HybridLinear, calibrate, cpu_has_native_bf16

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: LlamaModel
    tokenizer: Any
    args: LlamaArgs
    device: str
    dtype: torch.dtype
    eos_token_ids: frozenset[int]
    quantization: str  # what ExecutionPlan chose, in words
    load_seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def checkpoint_dir(spec: ModelSpec, settings: InferenceSettings) -> Path:
    """Directory with config.json, tokenizer files and safetensors weights for ``spec``."""
    kind, ref = spec.source_kind, spec.source_ref
    gguf: Path | None = None
    if kind == "package":
        gguf = package_file(ref)
        if gguf is None:
            raise FileNotFoundError(f"package file {ref} not found")
    elif kind == "path":
        path = Path(ref)
        if path.suffix == ".gguf":
            gguf = path
        else:
            return path
    elif kind == "hf":
        snapshot = hf_local_snapshot(ref)
        if snapshot is not None:
            return snapshot
        if not settings.allow_downloads:
            raise FileNotFoundError(f"{ref} is not in the local Hugging Face cache")
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "tokenizer*"]))
    else:
        raise ValueError(f"unknown source {spec.source!r}")
    return _convert_gguf(gguf, settings.model_cache_dir / _slug(f"{gguf.stem}-{gguf.stat().st_size}"))


def _convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file with transformers and cache it as a dense checkpoint."""
    if (target / "model.safetensors").exists():
        return target
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    logger.info("converting %s to a cached checkpoint in %s", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = hf_model.config
    # A dequantized GGUF model refuses save_pretrained; its plain tensors do not.
    state = {k: v.detach().clone().contiguous() for k, v in hf_model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config_dict, indent=2, default=str))
    tokenizer.save_pretrained(tmp)
    save_file(state, str(tmp / "model.safetensors"))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    logger.info("converted %s in %.1fs", gguf.name, time.perf_counter() - started)
    return target


def _load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {directory}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _gguf_linear_kind(spec: ModelSpec) -> str | None:
    """``int4``/``int8`` when ``spec`` is a GGUF whose attention and MLP weights are
    4-bit (Q4_0/Q4_1) or 8-bit (Q8_0) blocks; None otherwise."""
    gguf = package_file(spec.source_ref) if spec.source_kind == "package" else (
        Path(spec.source_ref) if spec.source_kind == "path" and spec.source_ref.endswith(".gguf") else None)
    if gguf is None:
        return None
    try:
        from gguf import GGUFReader

        kinds = {t.tensor_type.name for t in GGUFReader(str(gguf)).tensors if ".attn_q." in t.name}
    except Exception:  # noqa: BLE001 - an unreadable header just means "no hint"
        return None
    if kinds and kinds <= {"Q4_0", "Q4_1"}:
        return "int4"
    if kinds == {"Q8_0"}:
        return "int8"
    return None


@dataclass(frozen=True)
class ExecutionPlan:
    """How a model runs on this machine: compute dtype and the kind of each linear."""

    dtype: torch.dtype
    linear_kind: str  # dense | int8 | int4 | bitsandbytes
    head_kind: str
    quantization: str  # what the catalog and logs report

    @classmethod
    def choose(cls, spec: ModelSpec, device: str, settings: InferenceSettings) -> ExecutionPlan:
        """Pick by device capability, measured facts rather than hopes:

        - CUDA: fp16 dense; ``int8`` entries use bitsandbytes LLM.int8.
        - CPU with native bf16 (AVX512-BF16, AMX): bf16 activations, and weight-only
          int8/int4 kernels for the few-row steps (2-5x faster than dense there). ``full``
          keeps a GGUF's own 4-bit blocks (exact) and a dense source dense.
        - Other CPUs: fp32 dense (the weight-only kernels are slower than fp32 there).
        """
        if settings.dtype != "auto":
            forced = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.dtype]
        else:
            forced = None
        if device.startswith("cuda"):
            dtype = forced or torch.float16
            if spec.precision == "int8":
                return cls(dtype, "bitsandbytes", "dense", "bitsandbytes-int8")
            return cls(dtype, "dense", "dense", "none")
        dtype = forced or (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
        if dtype != torch.bfloat16:
            return cls(dtype, "dense", "dense", "none (weight-only kernels need native bf16)")
        if spec.precision in ("int8", "int4"):
            return cls(dtype, spec.precision, "int8", f"{spec.precision} weight-only")
        source = _gguf_linear_kind(spec)
        if source is None:
            return cls(dtype, "dense", "dense", "none")
        head = "int4+int8" if source == "int4" else "int8"  # quant.CandidateHead
        return cls(dtype, source, head, f"{source} weight-only (the GGUF's own blocks)")


def _bitsandbytes_linear(weight: torch.Tensor, device: str) -> Any:
    import bitsandbytes as bnb

    n, k = weight.shape
    q = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=6.0)
    q.weight = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False, has_fp16_weights=False)
    module = q.to(device)
    return lambda x: module(x[None])[0]


def load_model(spec: ModelSpec, settings: InferenceSettings) -> LoadedModel:
    """Load ``spec`` onto the configured device. Raises on missing weights or bad config."""
    from transformers import AutoConfig, AutoTokenizer

    started = time.perf_counter()
    device = resolve_device(settings.device)
    directory = checkpoint_dir(spec, settings)
    config = AutoConfig.from_pretrained(directory)
    args = LlamaArgs.from_hf_config(config)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    plan = ExecutionPlan.choose(spec, device, settings)
    state = _load_state_dict(directory)
    kind = "dense" if plan.linear_kind == "bitsandbytes" else plan.linear_kind
    native = load_native(settings.model_cache_dir / "kernels") if device == "cpu" and settings.native_kernels else None
    model = LlamaModel.from_state_dict(args, state, plan.dtype, device, kind, plan.head_kind,
                                       native.int4_linear if native is not None else None)
    if plan.linear_kind == "bitsandbytes":
        for layer in model.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                setattr(layer, name, _bitsandbytes_linear(getattr(layer, name).weight, device))
    del state
    if native is not None and native.decode_attention.supports(plan.dtype):
        model.decode_attention = native.decode_attention
        model.layer_ops = native.layer_ops
    hybrids = [lin for lin in model.linears() if isinstance(lin, HybridLinear)]
    if hybrids:
        calibrate(hybrids, plan.dtype, head=model.head if isinstance(model.head, CandidateHead) else None)
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        eos.add(gen_eos)
    elif isinstance(gen_eos, list):
        eos.update(gen_eos)
    elapsed = time.perf_counter() - started
    logger.info("loaded %s on %s (%s, quantization=%s, %s) in %.1fs", spec.name, device,
                plan.dtype, plan.quantization, "native kernels" if model.layer_ops else "torch ops", elapsed)
    return LoadedModel(model, tokenizer, args, device, plan.dtype, frozenset(eos), plan.quantization, elapsed)
