"""Validation of API bodies into typed requests. Errors name the field and the rule."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from inference import SamplingParams

from .errors import TOO_LARGE, ApiError, invalid
from .messages import Structure, parse_structure

MAX_STOP_SEQUENCES = 4
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class GenerationRequest:
    """A validated body of any generating endpoint: exactly one of ``prompt`` or ``messages``."""

    prompt: str | None
    messages: list[dict[str, str]] | None
    stream: bool
    params: SamplingParams
    structure: Structure | None = None  # response_format, tools


@dataclass(frozen=True)
class RunRequest(GenerationRequest):
    """``/ai/run``: ``raw`` sends ``prompt`` without the chat template."""

    raw: bool = False


def read_json_body(request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object; 413/3006 past ``API_MAX_BODY_BYTES``, 400/5004 if not JSON."""
    limit = settings.API_MAX_BODY_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise ApiError(413, TOO_LARGE, "Request is too large")
    body = request.body
    if len(body) > limit:
        raise ApiError(413, TOO_LARGE, "Request is too large")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"Body must be valid JSON: {exc}") from None
    except RecursionError:
        raise invalid(f"Body must be JSON nested at most {MAX_JSON_DEPTH} levels deep") from None
    except ValueError:  # an integer literal past Python's digit limit
        raise invalid("Body holds a number too large") from None
    if not isinstance(data, dict):
        raise invalid("Body must be a JSON object")
    check_json_values(data)
    return data


def check_json_values(data: Any) -> None:
    """Refuse what JSON allows but nothing downstream can hold: nesting deeper than
    ``MAX_JSON_DEPTH``, strings with lone surrogates (not encodable as UTF-8) or NUL
    characters (PostgreSQL text cannot store them). Iterative: no recursion limit."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise invalid("Strings must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise invalid("Strings must be valid Unicode (no lone surrogates)") from None
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise invalid(f"Body must be JSON nested at most {MAX_JSON_DEPTH} levels deep")
            items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
            for key, item in items:
                if key is not None:
                    stack.append((key, depth))
                stack.append((item, depth + 1))


def _number(data: dict[str, Any], field: str, default: float, low: float, high: float,
            low_open: bool = False) -> float:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"'{field}' must be a number")
    if isinstance(value, float) and not math.isfinite(value):  # JSON NaN/Infinity
        raise invalid(f"'{field}' must be a finite number")
    if value < low or value > high or (low_open and value == low):
        bound = f"greater than {low}" if low_open else f"at least {low}"
        raise invalid(f"'{field}' must be {bound} and at most {high}")
    return float(value)


def plain_int(raw: str | None, max_digits: int = 9) -> int | None:
    """A query parameter or header that must be a plain non-negative decimal number: its value,
    or None (``str.isdigit`` alone accepts Unicode digits that ``int`` may refuse)."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None


def _integer(data: dict[str, Any], field: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise invalid(f"'{field}' must be an integer")
    if value < low or (high is not None and value > high):
        rule = f"at least {low}" + (f" and at most {high}" if high is not None else "")
        raise invalid(f"'{field}' must be {rule}")
    return value


def _boolean(data: dict[str, Any], field: str, default: bool) -> bool:
    value = data.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"'{field}' must be a boolean")
    return value


def parse_stop(value: Any, field: str = "stop") -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise invalid(f"'{field}' must be a non-empty string or a list of non-empty strings")
    if len(value) > MAX_STOP_SEQUENCES:
        raise invalid(f"'{field}' may hold at most {MAX_STOP_SEQUENCES} sequences")
    return tuple(value)


def sampling_params(data: dict[str, Any], max_output_tokens: int, default_max_tokens: int = 256,
                    max_tokens_field: str = "max_tokens", default_temperature: float = 0.6,
                    guide: Any = None, logprobs: int | None = None) -> SamplingParams:
    max_tokens = _integer(data, max_tokens_field, min(default_max_tokens, max_output_tokens), 1, max_output_tokens)
    repetition_penalty = _number(data, "repetition_penalty", 1.0, 0.0, 2.0)
    return SamplingParams(
        max_tokens=int(max_tokens or 1),
        min_tokens=int(_integer(data, "min_tokens", 0, 0, int(max_tokens or 1)) or 0),
        temperature=_number(data, "temperature", default_temperature, 0.0, 5.0),
        top_p=_number(data, "top_p", 1.0, 0.0, 1.0, low_open=True),
        top_k=int(_integer(data, "top_k", 0, 1, 50) or 0),
        seed=_integer(data, "seed", None, 0, 2**63 - 1),
        # 0 would divide by zero; the reference accepts it, we read it as "no penalty"
        repetition_penalty=repetition_penalty or 1.0,
        frequency_penalty=_number(data, "frequency_penalty", 0.0, -2.0, 2.0),
        presence_penalty=_number(data, "presence_penalty", 0.0, -2.0, 2.0),
        stop=parse_stop(data.get("stop")),
        stop_token_ids=parse_token_ids(data.get("stop_token_ids"), "stop_token_ids"),
        logprobs=logprobs,
        guide=guide,
    )


MAX_TOKEN_ID = 2**31 - 1


def parse_token_ids(value: Any, field: str, max_items: int = 64) -> tuple[int, ...]:
    """A list of token ids (vLLM's ``stop_token_ids``, ``/detokenize``'s ``tokens``)."""
    if value is None:
        return ()
    if (not isinstance(value, list) or len(value) > max_items
            or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_TOKEN_ID for t in value)):
        raise invalid(f"'{field}' must be a list of at most {max_items} token ids (integers >= 0)")
    return tuple(value)


# Fields Workers AI documents for text generation that this server cannot honour.
NATIVE_REFUSED = {
    "lora": "this server serves no LoRA adapters",
    "functions": "embedded function calling is not supported; use 'tools'",
    "image": "the catalog's models take text only",
}


def refuse(data: dict[str, Any], refused: dict[str, str]) -> None:
    for name, reason in refused.items():
        if data.get(name) is not None:
            raise invalid(f"'{name}' is not supported: {reason}")


def parse_run_body(data: dict[str, Any], max_output_tokens: int) -> RunRequest:
    """Validate a native ``/ai/run`` body against a model's output limit."""
    refuse(data, NATIVE_REFUSED)
    has_prompt, has_messages = data.get("prompt") is not None, data.get("messages") is not None
    if has_prompt == has_messages:
        raise invalid("Provide exactly one of 'prompt' or 'messages'")
    prompt = None
    if has_prompt:
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise invalid("'prompt' must be a non-empty string")
    structure = parse_structure(data, native=True)
    raw = _boolean(data, "raw", False)
    if raw and not has_prompt:
        raise invalid("'raw' applies to 'prompt' only")
    return RunRequest(
        prompt=prompt,
        messages=structure.messages,
        raw=raw,
        stream=_boolean(data, "stream", False),
        params=sampling_params(data, max_output_tokens, guide=structure.guide),
        structure=structure,
    )
