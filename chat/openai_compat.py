"""OpenAI's shapes for what the OpenAI-compatible API receives: the error body and the
statuses its clients map to exceptions (``to_openai()`` is the one place that translates our
``ApiError`` and inference exceptions), and validated request bodies."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.http import JsonResponse

from inference import ContextWindowExceeded, InferenceError, SamplingParams

from .errors import (
    AUTHENTICATION,
    CAPACITY,
    CONTEXT_WINDOW,
    INVALID_INPUT,
    MODEL_UNAVAILABLE,
    NO_SUCH_MODEL,
    RATE_LIMITED,
    TIMEOUT,
    TOO_LARGE,
    ApiError,
    from_inference,
)
from .messages import parse_structure
from .models import CatalogEntry
from .validation import GenerationRequest, sampling_params

OPENAI_DEFAULT_TEMPERATURE = 1.0
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy /v1/completions
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for the legacy /v1/completions


# errors ------------------------------------------------------------------------------
class OpenAIError(Exception):
    """An error answered in OpenAI's shape, with the HTTP status its clients expect."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.as_dict(), status=self.status, json_dumps_params={"ensure_ascii": False})
        for key, value in self.headers.items():
            response[key] = value
        return response


# native code -> (HTTP status, OpenAI type, OpenAI code)
_ERROR_TABLE: dict[int, tuple[int, str, str | None]] = {
    AUTHENTICATION: (401, "invalid_request_error", "invalid_api_key"),
    NO_SUCH_MODEL: (404, "invalid_request_error", "model_not_found"),
    MODEL_UNAVAILABLE: (503, "server_error", "model_unavailable"),
    CONTEXT_WINDOW: (400, "invalid_request_error", "context_length_exceeded"),
    TOO_LARGE: (413, "invalid_request_error", "request_too_large"),
    RATE_LIMITED: (429, "requests", "rate_limit_exceeded"),
    CAPACITY: (429, "server_error", "server_overloaded"),
    INVALID_INPUT: (400, "invalid_request_error", None),
    TIMEOUT: (408, "invalid_request_error", "request_timeout"),
}
_FIELD_IN_MESSAGE = re.compile(r"^'([^']+)'")


def to_openai(exc: ApiError | InferenceError | OpenAIError, prompt_param: str = "messages") -> OpenAIError:
    """Translate any error raised before a stream starts into its OpenAI form.

    ``prompt_param`` names the input field (``messages`` or ``prompt``) blamed for a context
    overflow. Headers (``Retry-After``, ``WWW-Authenticate``) are kept.
    """
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ContextWindowExceeded):
        return OpenAIError(
            400,
            f"This model's maximum context length is {exc.limit} tokens, but the input has {exc.num_tokens} "
            f"tokens. Please reduce the length of the {prompt_param}.",
            code="context_length_exceeded", param=prompt_param,
        )
    if isinstance(exc, InferenceError):
        exc = from_inference(exc)
    headers = dict(exc.headers)
    if exc.code == AUTHENTICATION and exc.status != 401:  # the session's CSRF check
        return OpenAIError(exc.status, exc.message, headers=headers)
    if exc.code not in _ERROR_TABLE:
        return OpenAIError(exc.status, exc.message, "server_error" if exc.status >= 500 else "invalid_request_error",
                           headers=headers)
    status, type_, code = _ERROR_TABLE[exc.code]
    message, param = exc.message, None
    if exc.code == AUTHENTICATION:
        message = "Incorrect or missing API key: send 'Authorization: Bearer <token>'."
    elif exc.code == NO_SUCH_MODEL:
        param = "model"
    elif exc.code == CONTEXT_WINDOW:
        param = prompt_param
    elif exc.code == MODEL_UNAVAILABLE:
        headers["x-should-retry"] = "false"  # absent weights do not come back within a client's retries
    elif exc.code == INVALID_INPUT:
        match = _FIELD_IN_MESSAGE.match(exc.message)
        param = match.group(1) if match else None
    return OpenAIError(status, message, type_, code, param, headers)


def invalid(message: str, param: str | None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, code=code, param=param)


# request bodies ----------------------------------------------------------------------
@dataclass(frozen=True)
class CompletionRequest(GenerationRequest):
    """``/v1``: ``prompt`` (``/v1/completions``) goes without the chat template."""

    include_usage: bool = False


def model_name(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("You must provide a model parameter (a catalog name such as "
                       "'@cf/huggingfacetb/smollm2-135m-instruct').", "model")
    return model


def _reject_unless(data: dict[str, Any], field: str, allowed: tuple[Any, ...]) -> None:
    """400 ``unsupported_parameter`` when ``field`` is set to something we cannot honour."""
    value = data.get(field)
    if value is not None and not any(value == a and type(value) is type(a) for a in allowed):
        raise invalid(f"'{field}' is not supported by this server.", field, "unsupported_parameter")


def _stream_flags(data: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) from ``stream`` and ``stream_options``."""
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", "stream")
    options = data.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true", "stream_options")
    if not isinstance(options, dict):
        raise invalid("'stream_options' must be an object", "stream_options")
    include_usage = options.get("include_usage", False)
    if include_usage is not None and not isinstance(include_usage, bool):
        raise invalid("'stream_options.include_usage' must be a boolean", "stream_options.include_usage")
    return True, bool(include_usage)


def _params(data: dict[str, Any], entry: CatalogEntry, default_max_tokens: int,
            token_fields: tuple[str, ...], guide: Any = None, logprobs: int | None = None) -> SamplingParams:
    """Sampling settings at OpenAI's defaults; ``token_fields`` are the accepted names of the output budget."""
    n = data.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise invalid("Only 'n' = 1 is supported", "n", "unsupported_value")
    present = [f for f in token_fields if data.get(f) is not None]
    if len(present) > 1:
        raise invalid(f"Set only one of {' and '.join(repr(f) for f in present)}", present[-1])
    return sampling_params(data, entry.max_output_tokens, default_max_tokens=default_max_tokens,
                           max_tokens_field=present[0] if present else token_fields[0],
                           default_temperature=OPENAI_DEFAULT_TEMPERATURE, guide=guide, logprobs=logprobs)


def _text_content(value: Any, field: str) -> Any:
    """A message's content: a string, or a list of ``{"type": "text", "text"}`` parts joined."""
    if not isinstance(value, list):
        return value
    texts = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise invalid(f"'{field}[{i}]' must be a text part ({{\"type\": \"text\", \"text\": ...}}); "
                           "other content types are not supported", field, "unsupported_value")
        texts.append(part["text"])
    return "".join(texts)


def parse_chat_body(data: dict[str, Any], entry: CatalogEntry) -> CompletionRequest:
    """Validate a ``/v1/chat/completions`` body against ``entry``'s limits; raises ApiError/OpenAIError (400).

    Without a budget the answer may use the model's whole ``max_output_tokens`` (as OpenAI does).
    ``developer`` messages count as ``system``; text content parts are joined.
    """
    if data.get("functions") is not None or data.get("function_call") is not None:
        raise invalid("'functions' and 'function_call' are deprecated and not supported: use 'tools'",
                      "functions", "unsupported_parameter")
    _reject_unless(data, "logit_bias", ({},))
    # what OpenAI documents for chat that a local text model cannot do: refused, never ignored
    _reject_unless(data, "modalities", (["text"],))
    _reject_unless(data, "store", (False,))
    for field in ("audio", "prediction", "web_search_options", "reasoning_effort"):
        _reject_unless(data, field, ())
    logprobs = data.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise invalid("'logprobs' must be a boolean", "logprobs")
    top = data.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise invalid("'top_logprobs' must be an integer from 0 to 20", "top_logprobs")
    if top and not logprobs:
        raise invalid("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    raw_messages = data.get("messages")
    if isinstance(raw_messages, list):
        raw_messages = [
            {**m, "role": "system" if m.get("role") == "developer" else m.get("role"),
             "content": _text_content(m.get("content"), f"messages[{i}].content")} if isinstance(m, dict) else m
            for i, m in enumerate(raw_messages)
        ]
    structure = parse_structure({**data, "messages": raw_messages}, native=False)
    stream, include_usage = _stream_flags(data)
    params = _params(data, entry, entry.max_output_tokens, ("max_completion_tokens", "max_tokens"),
                     guide=structure.guide, logprobs=(top or 0) if logprobs else None)
    return CompletionRequest(None, structure.messages, stream, params, structure, include_usage=include_usage)


def parse_text_body(data: dict[str, Any], entry: CatalogEntry) -> CompletionRequest:
    """Validate a ``/v1/completions`` body; ``prompt`` is one non-empty string (or a list of one)."""
    _reject_unless(data, "echo", (False,))
    _reject_unless(data, "suffix", ("",))
    _reject_unless(data, "best_of", (1,))
    _reject_unless(data, "logit_bias", ({},))
    logprobs = data.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                 or not 0 <= logprobs <= MAX_COMPLETION_LOGPROBS):
        raise invalid(f"'logprobs' must be an integer from 0 to {MAX_COMPLETION_LOGPROBS}", "logprobs")
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid("'prompt' must be a non-empty string (or a list of exactly one)", "prompt")
    stream, include_usage = _stream_flags(data)
    params = _params(data, entry, COMPLETIONS_DEFAULT_MAX_TOKENS, ("max_tokens",), logprobs=logprobs)
    return CompletionRequest(prompt, None, stream, params, include_usage=include_usage)


def parse_tokenize_body(data: dict[str, Any]) -> tuple[str | None, list[dict[str, str]] | None]:
    """``/tokenize``: exactly one of ``prompt`` (a string) or ``messages``."""
    prompt, messages = data.get("prompt"), data.get("messages")
    if (prompt is None) == (messages is None):
        raise invalid("Provide exactly one of 'prompt' or 'messages'", "prompt")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise invalid("'prompt' must be a string", "prompt")
        return prompt, None
    return None, parse_structure(data, native=False).messages
