"""Settings of the inference package: one frozen dataclass, the one place for defaults.

The package never reads Django settings: the Django side builds an ``InferenceSettings``
from its environment and hands it to the pool (``pool.configure``). Used on its own, the
package reads the same variables from the environment (``from_env``).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class InferenceSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (auto: by device capability)
    max_batch_size: int = 16  # sequences in one step
    max_queue: int = 64  # requests waiting beyond the batch before QueueFull
    prefill_chunk_tokens: int = 2048  # prompt tokens per step when nothing decodes (less beside decodes)
    kv_cache_tokens: int = 32768  # KV cache size in token positions, shared by all sequences
    block_size: int = 16  # token positions per KV block
    prefix_caching: bool = True
    model_cache_dir: Path = Path.home() / ".cache" / "wai-models"
    allow_downloads: bool = False
    num_threads: int = 0  # 0: leave torch's default
    native_kernels: bool = True  # CPU: build inference/kernels with the C compiler (else torch's ops)
    cpu_isa: str = "native"  # native | avx2 | scalar: the instruction set the native kernels are built for
    weight_kernels: bool = True  # few-row steps on weight-only kernels (GGUF blocks, int4, int8); false: dense only
    dense_copy_mb: int = 1024  # GGUF weights dequantized for many-row steps are kept if they fit, else made per call
    keep_alive: int = 1800  # seconds a local model stays loaded while idle (Ollama's keep_alive); -1: forever
    max_loaded_models: int = 0  # local models loaded at once (the least recently used idle one goes); 0: no cap

    def __post_init__(self) -> None:
        for name, (ok, rule) in _RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{env_name(name)}={value!r}: expected {rule}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **defaults: Any) -> InferenceSettings:
        """Read ``INFERENCE_<FIELD>`` (and ``MODEL_CACHE_DIR``) variables; unset ones keep
        ``defaults`` or the class defaults. Raises ``ValueError`` naming the variable."""
        env = os.environ if env is None else env
        values: dict[str, Any] = dict(defaults)
        for f in fields(cls):
            raw = env.get(env_name(f.name), "").strip()
            if not raw:
                continue
            default = getattr(cls, f.name)
            if isinstance(default, bool):
                if raw.lower() not in _BOOLEANS:
                    raise ValueError(f"{env_name(f.name)}={raw!r}: expected true or false")
                values[f.name] = _BOOLEANS[raw.lower()]
            elif isinstance(default, int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{env_name(f.name)}={raw!r}: expected an integer") from None
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return cls(**values)


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return "MODEL_CACHE_DIR" if field_name == "model_cache_dir" else f"INFERENCE_{field_name.upper()}"


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "device": (lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), "auto, cpu, cuda or cuda:N"),
    "dtype": (lambda v: v in ("auto", "float32", "bfloat16", "float16"), "auto, float32, bfloat16 or float16"),
    "max_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "max_queue": (lambda v: v >= 0, "an integer >= 0"),
    "prefill_chunk_tokens": (lambda v: v >= 16, "an integer >= 16"),
    "kv_cache_tokens": (lambda v: v >= 256, "an integer >= 256"),
    "block_size": (lambda v: 1 <= v <= 256, "an integer from 1 to 256"),
    "num_threads": (lambda v: v >= 0, "an integer >= 0"),
    "cpu_isa": (lambda v: v in ("native", "avx2", "scalar"), "native, avx2 or scalar"),
    "dense_copy_mb": (lambda v: v >= 0, "an integer >= 0"),
    "keep_alive": (lambda v: v == -1 or v >= 1, "seconds >= 1, or -1 (never unload)"),
    "max_loaded_models": (lambda v: v >= 0, "an integer >= 0"),
}


def resolve_device(device: str) -> str:
    """Map ``auto`` to the first CUDA device when one is present, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"INFERENCE_DEVICE={device} but no CUDA device is available")
    return device
