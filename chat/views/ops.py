"""Operational endpoints: liveness, readiness, Prometheus metrics."""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from inference import pool

from ..auth import BearerTokenAuthentication
from ..catalog import default_model_name
from ..errors import ApiError, authentication_error

_LOCAL = {"127.0.0.1", "::1", "localhost"}


async def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> HttpResponse:
    """200 once the default model is loaded, 503 before (or when it cannot load)."""
    name = await sync_to_async(default_model_name)()
    if name and pool.is_loaded(name):
        return JsonResponse({"status": "ready", "model": name})
    reason = pool.failure(name) if name else "no default model in the catalog"
    response = JsonResponse({"status": "loading" if not reason else "unavailable", "model": name, "reason": reason},
                            status=503)
    response._has_been_logged = True  # type: ignore[attr-defined]  # polled while loading: not an error
    return response


async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; open to localhost, else needs an API token."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    is_local = request.META.get("REMOTE_ADDR") in _LOCAL and "HTTP_X_FORWARDED_FOR" not in request.META
    if not (settings.METRICS_ALLOW_LOCALHOST and is_local):
        try:
            if await BearerTokenAuthentication().authenticate(request) is None:
                raise authentication_error()
        except ApiError as exc:
            return exc.response()
    for engine in pool.engines():
        engine.update_metrics()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
