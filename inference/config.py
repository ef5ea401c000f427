"""Settings of the inference package: one frozen dataclass, the one place for defaults.

The package never reads Django settings: the Django side builds an ``InferenceSettings``
from its environment and hands it to the pool (``pool.configure``). Used on its own, the
package reads the same variables from the environment (``from_env``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path


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

    def __post_init__(self) -> None:
        checks = {
            "max_batch_size": self.max_batch_size >= 1,
            "max_queue": self.max_queue >= 0,
            "prefill_chunk_tokens": self.prefill_chunk_tokens >= 16,
            "block_size": self.block_size >= 1,
            "kv_cache_tokens": self.kv_cache_tokens >= 2 * self.block_size,
            "num_threads": self.num_threads >= 0,
            "dtype": self.dtype in ("auto", "float32", "bfloat16", "float16"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid inference settings: {', '.join(bad)}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> InferenceSettings:
        """Read ``INFERENCE_<FIELD>`` (and ``MODEL_CACHE_DIR``) variables; unset ones keep
        their defaults."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for f in fields(cls):
            name = "MODEL_CACHE_DIR" if f.name == "model_cache_dir" else f"INFERENCE_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            default = getattr(cls, f.name)
            if isinstance(default, bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]


def resolve_device(device: str) -> str:
    """Map ``auto`` to the first CUDA device when one is present, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"INFERENCE_DEVICE={device} but no CUDA device is available")
    return device
