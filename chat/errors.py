"""The API's error table in one place: codes, envelopes, and the mapping from
inference's domain exceptions."""
from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from inference import (
    ContextWindowExceeded,
    InferenceError,
    InvalidGrammar,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    UpstreamError,
)

AUTHENTICATION = 10000
INVALID_INPUT = 5004
NO_SUCH_MODEL = 5007
MODEL_UNAVAILABLE = 5008
CONTEXT_WINDOW = 5021
TOO_LARGE = 3006
RATE_LIMITED = 3036
CAPACITY = 3040
INTERNAL = 3043
TIMEOUT = 3007  # Workers AI's "Request timeout"
NO_ROUTE = 7000  # Cloudflare API: no route for that URI
METHOD_NOT_ALLOWED = 7001  # Cloudflare API: method not allowed for this route


class ApiError(Exception):
    """An error answered before any stream starts, with its HTTP status."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def envelope(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def success_response(result: Any, status: int = 200) -> JsonResponse:
    return JsonResponse(envelope(result), status=status, json_dumps_params={"ensure_ascii": False})


def error_response(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JsonResponse:
    body = {"result": None, "success": False, "errors": [{"code": code, "message": message}], "messages": []}
    response = JsonResponse(body, status=status)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def authentication_error() -> ApiError:
    return ApiError(401, AUTHENTICATION, "Authentication error", {"WWW-Authenticate": 'Bearer realm="api"'})


def invalid(message: str) -> ApiError:
    return ApiError(400, INVALID_INPUT, message)


def from_inference(exc: InferenceError) -> ApiError:
    """Map a domain exception to its row of the API table."""
    if isinstance(exc, ModelNotFound):
        return ApiError(400, NO_SUCH_MODEL, f"No such model {exc.name} or task")
    if isinstance(exc, ModelUnavailable):
        return ApiError(503, MODEL_UNAVAILABLE, f"Model {exc.name} is unavailable: {exc.reason}", {"Retry-After": "30"})
    if isinstance(exc, ContextWindowExceeded):
        return ApiError(413, CONTEXT_WINDOW, str(exc))
    if isinstance(exc, InvalidGrammar):  # compiled before submit; this is the safety net
        return ApiError(400, INVALID_INPUT, f"'response_format' cannot be followed: {exc.reason}")
    if isinstance(exc, UpstreamError):  # a remote entry's server refused the request
        if 400 <= exc.status < 500 and exc.status not in (401, 403, 404):
            return ApiError(400, INVALID_INPUT, f"The model's server refused the request: {exc.message}")
        return ApiError(503, MODEL_UNAVAILABLE, f"The model's server failed: {exc.message}", {"Retry-After": "5"})
    if isinstance(exc, QueueFull):
        return ApiError(429, CAPACITY, "Capacity temporarily exceeded, please try again.",
                        {"Retry-After": str(exc.retry_after)})
    return ApiError(500, INTERNAL, "Internal server error")
