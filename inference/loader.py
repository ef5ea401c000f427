"""Build a ready-to-run model and tokenizer from a ``ModelSpec``.

A GGUF file is read in place (``gguf_weights``): its config and tokenizer through
transformers (the tokenizer cached under ``MODEL_CACHE_DIR``, since building a 262k-token
vocabulary from GGUF metadata takes minutes), its tensors memory-mapped, so a model loads in
about its own size. A checkpoint folder is read from its safetensors. The family file
registered for the config's ``model_type`` (``inference/models``) builds the decoder.
``checkpoint_dir`` still converts a GGUF into a dense checkpoint, for references in tests
and benchmarks only.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .catalog import ModelSpec, hf_local_snapshot, package_file
from .config import InferenceSettings, resolve_device
from .kernels import load_native
from .models import Builder, DecoderModel, ModelArgs, StateDict, Weights, build, text_config
from .quant import CandidateHead, HybridLinear, calibrate, cpu_has_native_bf16, make_linear

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: DecoderModel
    tokenizer: Any
    args: ModelArgs
    device: str
    dtype: torch.dtype
    eos_token_ids: frozenset[int]
    quantization: str  # what ExecutionPlan chose, in words
    load_seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def gguf_path(spec: ModelSpec, cache_dir: Path | None = None) -> Path | None:
    """The GGUF file ``spec`` reads, or None for a checkpoint folder or hub repo; an
    ``assembled:`` source is assembled into ``cache_dir`` the first time (sha256 checked)."""
    if spec.source_kind == "assembled":
        import importlib

        glue = importlib.import_module(spec.source_ref)
        target = (cache_dir or Path.home() / ".cache" / "wai-models") / glue.MODEL_NAME
        return Path(glue.assemble(target))
    if spec.source_kind == "package":
        gguf = package_file(spec.source_ref)
        if gguf is None:
            raise FileNotFoundError(f"package file {spec.source_ref} not found")
        return gguf
    if spec.source_kind == "path" and spec.source_ref.endswith(".gguf"):
        return Path(spec.source_ref)
    return None


def checkpoint_dir(spec: ModelSpec, settings: InferenceSettings) -> Path:
    """Directory with config.json, tokenizer files and safetensors weights for ``spec``
    (a GGUF is converted once to a dense checkpoint: references for tests and benchmarks)."""
    kind, ref = spec.source_kind, spec.source_ref
    gguf: Path | None = None
    if kind == "assembled":
        gguf = gguf_path(spec, settings.model_cache_dir)
    elif kind == "package":
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


def _gguf_linear_kind(spec: ModelSpec, settings: InferenceSettings) -> str | None:
    """``int4``/``int8`` when ``spec`` is a GGUF whose attention and MLP weights are
    4-bit (Q4_0/Q4_1) or 8-bit (Q8_0) blocks; None otherwise."""
    try:
        gguf = gguf_path(spec, settings.model_cache_dir)
    except (FileNotFoundError, ImportError, ValueError):
        return None
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
        source = _gguf_linear_kind(spec, settings)
        if source is None:
            return cls(dtype, "dense", "dense", "none")
        head = "int4+int8" if source == "int4" else "int8"  # quant.CandidateHead
        return cls(dtype, source, head, f"{source} weight-only (the GGUF's own blocks)")


def _bitsandbytes_linear(weight: torch.Tensor, device: str) -> Any:
    import bitsandbytes as bnb

    n, k = weight.shape
    q = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=6.0)
    q.weight = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False, has_fp16_weights=False)
    return _ModuleLinear(q.to(device), n, k)


class _ModuleLinear:
    """A ``torch.nn`` linear module called on ``[M, K]`` rows."""

    def __init__(self, module: Any, out_features: int, in_features: int) -> None:
        self.module, self.out_features, self.in_features = module, out_features, in_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x[None])[0]  # type: ignore[no-any-return]


def _cache_dir(gguf: Path, settings: InferenceSettings) -> Path:
    return settings.model_cache_dir / _slug(f"{gguf.stem}-{gguf.stat().st_size}")


def gguf_tokenizer(gguf: Path, settings: InferenceSettings) -> Any:
    """The tokenizer transformers builds from the GGUF's metadata, saved under
    ``MODEL_CACHE_DIR`` the first time and read from there after."""
    from transformers import AutoTokenizer

    cached = _cache_dir(gguf, settings) / "tokenizer"
    if (cached / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = cached.with_name(f"tokenizer.tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    if cached.exists():
        shutil.rmtree(cached)
    os.replace(tmp, cached)
    logger.info("built the tokenizer of %s in %.1fs (cached in %s)", gguf.name, time.perf_counter() - started, cached)
    return tokenizer


def read_source(spec: ModelSpec, settings: InferenceSettings) -> tuple[Any, Any, Weights]:
    """``(config, tokenizer, weights)`` of ``spec``, the weights read lazily."""
    from transformers import AutoConfig, AutoTokenizer

    gguf = gguf_path(spec, settings.model_cache_dir)
    if gguf is not None:
        from .gguf_weights import GGUFWeights

        config = text_config(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name))
        return config, gguf_tokenizer(gguf, settings), GGUFWeights(gguf, config)
    directory = checkpoint_dir(spec, settings)
    config = text_config(AutoConfig.from_pretrained(directory))
    return config, AutoTokenizer.from_pretrained(directory), StateDict(_load_state_dict(directory))


def load_model(spec: ModelSpec, settings: InferenceSettings) -> LoadedModel:
    """Load ``spec`` onto the configured device. Raises on missing weights or an
    architecture no family file describes."""
    started = time.perf_counter()
    device = resolve_device(settings.device)
    config, tokenizer, weights = read_source(spec, settings)
    args = ModelArgs.from_hf_config(config)
    plan = ExecutionPlan.choose(spec, device, settings)
    native = load_native(settings.model_cache_dir / "kernels") if device == "cpu" and settings.native_kernels else None
    native_int4 = native.int4_linear if native is not None else None

    def make(weight: torch.Tensor, kind: str) -> Any:
        if kind == "bitsandbytes":
            return _bitsandbytes_linear(weight, device)
        return make_linear(weight.to(device), kind, plan.dtype, native_int4)

    builder = Builder(config, weights, plan.dtype, device, make, plan.linear_kind, plan.head_kind,
                      native if native is not None and native.decode_attention.supports(plan.dtype) else None)
    model = build(builder)
    del weights
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
    logger.info("loaded %s (%s) on %s (%s, quantization=%s, %s) in %.1fs", spec.name, args.model_type, device,
                plan.dtype, plan.quantization, "native kernels" if builder.ops else "torch ops", elapsed)
    return LoadedModel(model, tokenizer, args, device, plan.dtype, frozenset(eos), plan.quantization, elapsed)
