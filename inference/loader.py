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
from .gguf_weights import GGUFWeights
from .kernels import NativeKernels, load_native
from .models import Builder, DecoderModel, ModelArgs, StateDict, Weights, build, is_supported, text_config
from .models.transformers_backend import TransformersModel
from .quant import CandidateHead, HybridLinear, calibrate, cpu_has_native_bf16, make_linear

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: DecoderModel | TransformersModel
    tokenizer: Any
    args: ModelArgs
    device: str
    dtype: torch.dtype
    eos_token_ids: frozenset[int]
    quantization: str  # what ExecutionPlan chose, in words
    load_seconds: float
    path: str = "native"  # native: a family file of inference/models; transformers: its own classes


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
    if gguf is None:
        raise FileNotFoundError(f"no GGUF for {spec.source!r}")
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
    """``int4``/``int8`` when ``spec`` is a GGUF whose attention weights are 4-bit (Q4_0/Q4_1)
    or 8-bit (Q8_0) blocks, ``gguf`` for other block types; None for a checkpoint."""
    try:
        gguf = gguf_path(spec, settings.model_cache_dir)
    except (FileNotFoundError, ImportError, ValueError):
        return None
    if gguf is None:
        return None
    try:
        from .gguf_file import open_gguf

        kinds = {t.tensor_type.name for t in open_gguf(gguf).tensors.values() if ".attn_q." in t.name}
    except Exception:  # noqa: BLE001 - an unreadable header just means "no hint"
        return None
    if kinds and kinds <= {"Q4_0", "Q4_1"}:
        return "int4"
    if kinds == {"Q8_0"}:
        return "int8"
    return "gguf" if kinds else None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # INFERENCE_DTYPE


@dataclass(frozen=True)
class ExecutionPlan:
    """How a model runs on this machine: compute dtype and the kind of each linear."""

    dtype: torch.dtype
    linear_kind: str  # dense | int8 | int4 | bitsandbytes
    head_kind: str
    quantization: str  # what the catalog and logs report

    @classmethod
    def choose(cls, spec: ModelSpec, device: str, settings: InferenceSettings,
               native: NativeKernels | None = None) -> ExecutionPlan:
        """Pick by device capability, measured facts rather than hopes:

        - CUDA: fp16 dense; ``int8`` entries use bitsandbytes LLM.int8.
        - CPU, compute dtype bf16 where the CPU has it natively (AVX512-BF16, AMX), else fp32.
        - A GGUF (``full``): its own blocks through the block kernels (``gguf_linear``) for
          few-row steps, on AVX2 and AVX-512 alike; a GGUF of Q4_0/Q4_1 blocks on a bf16 CPU
          with AVX-512 keeps the 4-bit tile kernel of our own (``int4``), measured faster there.
        - ``int8``/``int4`` entries on a bf16 CPU: weight-only kernels from dense weights.
        - Anything else: dense.
        """
        forced = DTYPES.get(settings.dtype)
        if device.startswith("cuda"):
            dtype = forced or torch.float16
            if spec.precision == "int8":
                return cls(dtype, "bitsandbytes", "dense", "bitsandbytes-int8")
            return cls(dtype, "dense", "dense", "none")
        # a forced narrower ISA runs as a CPU without native bf16 would (INFERENCE_CPU_ISA=avx2)
        native_bf16 = settings.cpu_isa == "native" and cpu_has_native_bf16()
        dtype = forced or (torch.bfloat16 if native_bf16 else torch.float32)
        if not settings.weight_kernels:  # dense GEMM for every step: a row's numbers never depend on its batch
            return cls(dtype, "dense", "dense", "none (INFERENCE_WEIGHT_KERNELS=false)")
        source = _gguf_linear_kind(spec, settings) if spec.precision == "full" else None
        blocks = getattr(native, "gguf_blocks", None)
        if source == "int4" and dtype == torch.bfloat16 and native is not None and native.int4_linear.available:
            return cls(dtype, "int4", "int4+int8", "int4 weight-only (the GGUF's own Q4 blocks)")
        if source is not None and blocks is not None and dtype in (torch.bfloat16, torch.float32):
            return cls(dtype, "gguf", "gguf", f"the GGUF's own blocks ({blocks.isa} kernels)")
        if dtype == torch.bfloat16 and spec.precision in ("int8", "int4"):
            return cls(dtype, spec.precision, "int8", f"{spec.precision} weight-only")
        if dtype == torch.bfloat16 and source == "int8":
            return cls(dtype, "int8", "int8", "int8 weight-only (the GGUF's Q8_0 blocks)")
        return cls(dtype, "dense", "dense", "none")


def _dense_bytes(weights: Weights, dtype: torch.dtype) -> int:
    """Bytes of the GGUF's matrices dequantized to ``dtype``."""
    tensors = getattr(weights, "tensors", {})
    size = torch.empty((), dtype=dtype).element_size()
    return sum(int(t.n_elements) * size for t in tensors.values() if len(t.shape) >= 2)


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


def _cached(gguf: Path, settings: InferenceSettings, name: str, marker: str, auto: Any) -> Any:
    """``auto.from_pretrained`` of the GGUF, saved under ``MODEL_CACHE_DIR/<file>/<name>`` the first
    time and read from there after: transformers parses the whole metadata for it (Gemma 3's
    262k-token vocabulary took about 20 s)."""
    cached = _cache_dir(gguf, settings) / name
    if (cached / marker).exists():
        return auto.from_pretrained(cached)
    started = time.perf_counter()
    made = auto.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = cached.with_name(f"{name}.tmp{os.getpid()}")
    made.save_pretrained(tmp)
    if cached.exists():
        shutil.rmtree(cached)
    os.replace(tmp, cached)  # whole or absent, whatever else loads it meanwhile
    logger.info("built the %s of %s in %.1fs (cached in %s)", name, gguf.name, time.perf_counter() - started, cached)
    return made


def gguf_config(gguf: Path, settings: InferenceSettings) -> Any:
    """The transformers config of a GGUF (its text model's), cached."""
    from transformers import AutoConfig

    return text_config(_cached(gguf, settings, "config", "config.json", AutoConfig))


def gguf_tokenizer(gguf: Path, settings: InferenceSettings) -> Any:
    """The tokenizer transformers builds from the GGUF's metadata, cached."""
    from transformers import AutoTokenizer

    return _cached(gguf, settings, "tokenizer", "tokenizer_config.json", AutoTokenizer)


def read_source(spec: ModelSpec, settings: InferenceSettings) -> tuple[Any, Any, Path, bool]:
    """``(config, tokenizer, path, is_gguf)`` of ``spec``: a GGUF file or a checkpoint folder."""
    from transformers import AutoConfig, AutoTokenizer

    gguf = gguf_path(spec, settings.model_cache_dir)
    if gguf is not None:
        return gguf_config(gguf, settings), gguf_tokenizer(gguf, settings), gguf, True
    directory = checkpoint_dir(spec, settings)
    config = text_config(AutoConfig.from_pretrained(directory))
    return config, AutoTokenizer.from_pretrained(directory), directory, False


def describe_source(spec: ModelSpec, settings: InferenceSettings) -> str:
    """How ``spec`` would be served, in words (``native: gemma3_text`` or ``transformers: gpt2``),
    read from its config alone (no weights). Raises ValueError naming the reason for a
    source that neither path can run (an architecture transformers does not know, a GGUF it
    cannot parse), FileNotFoundError when the weights are not there."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    gguf = gguf_path(spec, settings.model_cache_dir)
    try:
        if gguf is not None:
            config = gguf_config(gguf, settings)
        else:
            config = AutoConfig.from_pretrained(checkpoint_dir(spec, settings))
    except (ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise ValueError(f"transformers cannot read this model's config: {exc}") from None
    config = text_config(config)
    if is_supported(config):
        return f"native: {config.model_type}"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"transformers: {config.model_type}"
    raise ValueError(f"architecture {config.model_type!r} is neither a family of inference/models nor a "
                     "text-generation model transformers can load")


def _load_through_transformers(spec: ModelSpec, settings: InferenceSettings, config: Any, tokenizer: Any, path: Path,
                               is_gguf: bool, device: str, started: float) -> LoadedModel:
    from .models.transformers_backend import load_transformers_model

    dtype = DTYPES.get(settings.dtype) or (torch.float16 if device.startswith("cuda") else torch.float32)
    model = load_transformers_model(path.parent if is_gguf else path, config, dtype, device,
                                    path.name if is_gguf else None)
    elapsed = time.perf_counter() - started
    logger.info("loaded %s (%s) through transformers' own classes on %s (%s) in %.1fs", spec.name,
                config.model_type, device, dtype, elapsed)
    return LoadedModel(model, tokenizer, model.args, device, dtype, _eos_ids(tokenizer, config),
                       "none (transformers' own model classes)", elapsed, path="transformers")


def _eos_ids(tokenizer: Any, config: Any) -> frozenset[int]:
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        eos.add(gen_eos)
    elif isinstance(gen_eos, list):
        eos.update(gen_eos)
    return frozenset(eos)


def load_model(spec: ModelSpec, settings: InferenceSettings) -> LoadedModel:
    """Load ``spec`` onto the configured device. Raises on missing weights or an
    architecture no family file describes."""
    started = time.perf_counter()
    device = resolve_device(settings.device)
    config, tokenizer, path, is_gguf = read_source(spec, settings)
    args = ModelArgs.from_hf_config(config)
    if not is_supported(config):
        return _load_through_transformers(spec, settings, config, tokenizer, path, is_gguf, device, started)
    weights: Weights = GGUFWeights(path, config) if is_gguf else StateDict(_load_state_dict(path))
    native = (load_native(settings.model_cache_dir / "kernels", settings.cpu_isa)
              if device == "cpu" and settings.native_kernels else None)
    plan = ExecutionPlan.choose(spec, device, settings, native)
    native_int4 = native.int4_linear if native is not None else None

    def make(weight: torch.Tensor, kind: str) -> Any:
        if kind == "bitsandbytes":
            return _bitsandbytes_linear(weight, device)
        return make_linear(weight.to(device), "dense" if kind == "gguf" else kind, plan.dtype, native_int4)

    keep_dense = _dense_bytes(weights, plan.dtype) <= settings.dense_copy_mb * 2**20
    builder = Builder(config, weights, plan.dtype, device, make, plan.linear_kind, plan.head_kind,
                      native if native is not None and native.decode_attention.supports(plan.dtype) else None,
                      keep_dense_copies=keep_dense)
    model = build(builder)
    del weights
    hybrids = [lin for lin in model.linears() if isinstance(lin, HybridLinear)]
    if hybrids:
        calibrate(hybrids, plan.dtype, head=model.head if isinstance(model.head, CandidateHead) else None)
    elapsed = time.perf_counter() - started
    quantization = plan.quantization
    if builder.notes:
        quantization += ": " + ", ".join(sorted(builder.notes))
    if plan.linear_kind == "gguf":
        quantization += "; many-row steps on " + ("a dense copy" if keep_dense else "weights dequantized per call")
    logger.info("loaded %s (%s) on %s (%s, quantization=%s, %s) in %.1fs", spec.name, args.model_type, device,
                plan.dtype, quantization, "native kernels" if builder.ops else "torch ops", elapsed)
    return LoadedModel(model, tokenizer, args, device, plan.dtype, _eos_ids(tokenizer, config), quantization,
                       elapsed)
