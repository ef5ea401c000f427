"""Django-free inference: catalog -> pool -> engine (one per model).

The engine batches every active request of a model into each forward step on a
worker thread and hands text pieces to asyncio consumers. This module is the package's
public API: code outside ``inference`` imports these names and no others (a test
checks it). They load lazily, so the pure-Python parts never pull in torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BUILTIN_CATALOG": "catalog",
    "DEFAULT_MODEL": "catalog",
    "ModelSpec": "catalog",
    "package_file": "catalog",
    "unavailable_reason": "catalog",
    "InferenceSettings": "config",
    "resolve_device": "config",
    "Engine": "engine",
    "ContextWindowExceeded": "errors",
    "GenerationFailed": "errors",
    "InferenceError": "errors",
    "ModelNotFound": "errors",
    "ModelUnavailable": "errors",
    "QueueFull": "errors",
    "UpstreamError": "errors",
    "RemoteEngine": "remote",
    "Guide": "guided",
    "InvalidGrammar": "guided",
    "MainThreadHost": "host",
    "checkpoint_dir": "loader",
    "describe_source": "loader",
    "gguf_path": "loader",
    "open_gguf": "gguf_file",
    "Finished": "outputs",
    "RequestStream": "outputs",
    "TokenLogprob": "outputs",
    "Usage": "outputs",
    "FittedPrompt": "prompts",
    "check_context": "prompts",
    "ModelPool": "model_pool",
    "pool": "model_pool",
    "InvalidSamplingParams": "sequence",
    "SamplingParams": "sequence",
    "ParsedDelta": "tools",
    "Tool": "tools",
    "ToolCall": "tools",
    "ToolCallParser": "tools",
    "parse_tool_calls": "tools",
    "render_messages": "tools",
    "tool_guide": "tools",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .catalog import BUILTIN_CATALOG, DEFAULT_MODEL, ModelSpec, package_file, unavailable_reason
    from .config import InferenceSettings, resolve_device
    from .engine import Engine
    from .errors import (
        ContextWindowExceeded,
        GenerationFailed,
        InferenceError,
        ModelNotFound,
        ModelUnavailable,
        QueueFull,
        UpstreamError,
    )
    from .gguf_file import open_gguf
    from .guided import Guide, InvalidGrammar
    from .host import MainThreadHost
    from .loader import checkpoint_dir, describe_source, gguf_path
    from .model_pool import ModelPool, pool
    from .outputs import Finished, RequestStream, TokenLogprob, Usage
    from .prompts import FittedPrompt, check_context
    from .remote import RemoteEngine
    from .sequence import InvalidSamplingParams, SamplingParams
    from .tools import ParsedDelta, Tool, ToolCall, ToolCallParser, parse_tool_calls, render_messages, tool_guide
