"""The one place the inference package reads configuration.

Reads Django settings lazily when Django is configured, else the environment, so the
package stays importable and testable without Django.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InferenceSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_batch_size: int = 16
    max_queue: int = 64
    prefill_chunk_tokens: int = 512
    model_cache_dir: Path = Path.home() / ".cache" / "wai-models"
    int8_backend: str = "auto"  # auto | bitsandbytes | torch
    allow_downloads: bool = False
    num_threads: int = 0  # 0: leave torch's default


def get_settings() -> InferenceSettings:
    """Return the current settings; called at engine/pool build time, never cached here."""
    try:
        from django.conf import settings as dj

        if dj.configured:
            return InferenceSettings(
                device=dj.INFERENCE_DEVICE,
                max_batch_size=dj.INFERENCE_MAX_BATCH_SIZE,
                max_queue=dj.INFERENCE_MAX_QUEUE,
                prefill_chunk_tokens=dj.INFERENCE_PREFILL_CHUNK_TOKENS,
                model_cache_dir=Path(dj.MODEL_CACHE_DIR),
                int8_backend=dj.INFERENCE_INT8_BACKEND,
                allow_downloads=dj.INFERENCE_ALLOW_DOWNLOADS,
                num_threads=dj.INFERENCE_NUM_THREADS,
            )
    except ImportError:  # pragma: no cover - Django absent
        pass
    env = os.environ
    return InferenceSettings(
        device=env.get("INFERENCE_DEVICE", "auto"),
        max_batch_size=int(env.get("INFERENCE_MAX_BATCH_SIZE", "16")),
        max_queue=int(env.get("INFERENCE_MAX_QUEUE", "64")),
        prefill_chunk_tokens=int(env.get("INFERENCE_PREFILL_CHUNK_TOKENS", "512")),
        model_cache_dir=Path(env.get("MODEL_CACHE_DIR", str(InferenceSettings.model_cache_dir))),
        int8_backend=env.get("INFERENCE_INT8_BACKEND", "auto"),
        allow_downloads=env.get("INFERENCE_ALLOW_DOWNLOADS", "") in ("1", "true", "yes"),
        num_threads=int(env.get("INFERENCE_NUM_THREADS", "0")),
    )


def resolve_device(device: str) -> str:
    """Map ``auto`` to the first CUDA device when one is present, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"INFERENCE_DEVICE={device} but no CUDA device is available")
    return device
