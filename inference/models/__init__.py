"""Model families, one file each, registered by transformers' ``model_type``.

Each file describes its decoder block from the shared parts in ``inference/layers``
(nano-vllm's ``models/``); ``build`` looks the family up. A ``model_type`` outside the table
is served by transformers' own classes (``inference/hf_runner.py``) instead.
To add a family: a file here with a ``@register("<model_type>")`` function taking a
``Builder`` and returning ``builder.decoder(...)``, imported below, and its test in
``tests/inference/test_families.py``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Builder, DecoderModel, ModelArgs, StateDict, Weights

FAMILIES: dict[str, Callable[[Builder], DecoderModel]] = {}


def register(*model_types: str) -> Callable[[Callable[[Builder], DecoderModel]], Callable[[Builder], DecoderModel]]:
    def add(build: Callable[[Builder], DecoderModel]) -> Callable[[Builder], DecoderModel]:
        for model_type in model_types:
            FAMILIES[model_type] = build
        return build

    return add


def text_config(config: Any) -> Any:
    """The text model's config of a multimodal one (Gemma 3's ``text_config``), else ``config``."""
    return getattr(config, "text_config", None) or config


def is_supported(config: Any) -> bool:
    return text_config(config).model_type in FAMILIES


def build(builder: Builder) -> DecoderModel:
    """The decoder of ``builder.config``'s family; raises ValueError for a family not in the table."""
    model_type = builder.config.model_type
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported architecture {model_type!r} (native families: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[model_type](builder)


from . import gemma2, gemma3, llama, mistral, phi3, qwen2, qwen3  # noqa: E402,F401  (they register)

__all__ = ["FAMILIES", "Builder", "DecoderModel", "ModelArgs", "StateDict", "Weights", "build", "is_supported",
           "register", "text_config"]
