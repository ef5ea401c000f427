"""One door for API views: method check, authentication, rate limit, error envelope.

Shaped like DRF's ``APIView.initial`` plus its exception handler, as a small decorator.
Views raise ``ApiError`` / ``InferenceError`` (and, on the OpenAI routes, ``OpenAIError``)
and the door answers them in the endpoint's envelope: Workers AI's for the native and
conversation APIs, OpenAI's for ``/v1``. Anything else a view raises is a bug: it is logged
with its traceback and the caller gets a generic 500 that carries none of its text.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase

from inference import InferenceError

from ..auth import authenticate
from ..errors import INTERNAL, METHOD_NOT_ALLOWED, ApiError, from_inference
from ..limits import check_rate_limit
from ..openai_compat import OpenAIError, to_openai

Envelope = Literal["native", "openai"]
View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

logger = logging.getLogger(__name__)
# Django answers these itself (404, 403, 400).
DJANGO_HTTP_ERRORS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation)


def error_response(exc: Exception, envelope: Envelope) -> HttpResponseBase:
    """``exc`` as the endpoint's error response."""
    if envelope == "openai":
        if isinstance(exc, ApiError | InferenceError | OpenAIError):
            return to_openai(exc).response()
        raise exc
    if isinstance(exc, InferenceError):
        return from_inference(exc).response()
    if isinstance(exc, ApiError):
        return exc.response()
    raise exc


def internal_error(envelope: Envelope) -> HttpResponseBase:
    """The generic 500: the detail belongs in the server log, never in the response."""
    return error_response(ApiError(500, INTERNAL, "Internal server error"), envelope)


def not_allowed(methods: tuple[str, ...], envelope: Envelope) -> HttpResponseBase:
    if envelope == "openai":
        response = OpenAIError(405, f"Method not allowed; use {', '.join(methods)}.",
                               code="method_not_allowed").response()
        response["Allow"] = ", ".join(methods)
        return response
    response = ApiError(405, METHOD_NOT_ALLOWED, f"Method not allowed; use {', '.join(methods)}.").response()
    response["Allow"] = ", ".join(methods)
    return response


def api_view(*methods: str, envelope: Envelope = "native", authenticated: bool = True,
             rate_limited: bool = False) -> Callable[[View], View]:
    """Decorate an async view ``view(request, *args, principal=..., **kwargs)``.

    Answers 405 for other methods; authenticates (the view gets ``principal``) unless
    ``authenticated=False``; applies the per-token rate limit when ``rate_limited``; maps
    the errors above to the envelope. CSRF is left to ``auth.SessionAuthentication``.
    """
    allowed = tuple(m.upper() for m in methods)
    handled: tuple[type[Exception], ...] = (ApiError, InferenceError)
    if envelope == "openai":
        handled += (OpenAIError,)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def door(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in allowed:
                return not_allowed(allowed, envelope)
            try:
                if authenticated:
                    kwargs["principal"] = principal = await authenticate(request)
                    if rate_limited:
                        check_rate_limit(principal)
                return await view(request, *args, **kwargs)
            except handled as exc:
                return error_response(exc, envelope)
            except DJANGO_HTTP_ERRORS:
                raise
            except Exception:
                logger.exception("unhandled error in %s %s", request.method, request.path)
                return internal_error(envelope)

        door.csrf_exempt = True  # type: ignore[attr-defined]
        return door

    return decorate
