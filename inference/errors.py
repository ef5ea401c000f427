"""Domain exceptions of the inference package.

They carry data, not HTTP: the Django side maps them to the API table in one place
(``chat/errors.py``).
"""
from __future__ import annotations


class InferenceError(Exception):
    """Base class for errors raised by the inference package."""


class ModelNotFound(InferenceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No such model {name} or task")
        self.name = name


class ModelUnavailable(InferenceError):
    """The model is in the catalog but cannot serve (weights absent, load failed...)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Model {name} is unavailable: {reason}")
        self.name = name
        self.reason = reason


class ContextWindowExceeded(InferenceError):
    def __init__(self, num_tokens: int, limit: int) -> None:
        super().__init__(
            f"The estimated number of input tokens ({num_tokens}) exceeded this model "
            f"context window limit ({limit})."
        )
        self.num_tokens = num_tokens
        self.limit = limit


class QueueFull(InferenceError):
    """The engine's waiting queue is full; the caller should retry later."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("Capacity temporarily exceeded, please try again.")
        self.retry_after = retry_after


class GenerationFailed(InferenceError):
    """The worker failed while running this request's step."""


class UpstreamError(InferenceError):
    """A remote engine's server refused or failed a request before its stream started.
    ``status`` is the upstream's HTTP status (0 when it could not be reached)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
