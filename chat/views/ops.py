"""Operational endpoints: liveness, readiness, Prometheus metrics; and the 500 handler."""
from __future__ import annotations

import ipaddress

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views import defaults

from inference import pool

from ..auth import BearerTokenAuthentication
from ..catalog import default_model_name, entry_states
from ..errors import AUTHENTICATION, NO_ROUTE, ApiError, authentication_error
from .door import Envelope, api_view, error_response, internal_error

# Paths answered in an API envelope when Django itself has to answer 500 (an error outside
# the door, say in a middleware); the door answers errors inside API views.
_API_PREFIXES: tuple[tuple[str, Envelope], ...] = (
    ("/v1/", "openai"), ("/ai/", "native"), ("/client/v4/", "native"), ("/api/", "native"),
)


async def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> HttpResponse:
    """200 once the default model (or ``?model=NAME``) is loaded, 503 before (or when it cannot load)."""
    name = request.GET.get("model") or await sync_to_async(default_model_name)()
    if name and (pool.is_loaded(name) or pool.was_unloaded(name)):  # unloaded when idle: loads on demand
        return JsonResponse({"status": "ready", "model": name, "models": await sync_to_async(entry_states)()})
    if not name:
        reason: str | None = "no default model in the catalog"
    else:  # the failure's text (exception, paths) is in the server log, not for anonymous probes
        reason = "failed to load; see the server log" if pool.failure(name) else None
    response = JsonResponse({"status": "loading" if not reason else "unavailable", "model": name, "reason": reason},
                            status=503)
    response._has_been_logged = True  # type: ignore[attr-defined]  # polled while loading: not an error
    return response


def _in_allowed_network(request: HttpRequest) -> bool:
    """Whether the peer (``REMOTE_ADDR``, never a forwarded header) is in METRICS_ALLOW_CIDRS."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:  # no peer address (a Unix socket)
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in settings.METRICS_ALLOW_CIDRS)


@api_view("GET", authenticated=False)
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for METRICS_ALLOW_CIDRS or a staff user's API token."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if not _in_allowed_network(request):
        principal = await BearerTokenAuthentication().authenticate(request)
        if principal is None:
            raise authentication_error()
        if not principal.user.is_staff:
            raise ApiError(403, AUTHENTICATION, "Metrics need a staff user's API token")
    for engine in pool.engines():
        engine.update_metrics()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponseBase:
    """``handler404``: API paths get their envelope's 404, pages Django's."""
    for prefix, envelope in _API_PREFIXES:
        if request.path.startswith(prefix):
            return error_response(ApiError(404, NO_ROUTE, f"No route for {request.method} {request.path}"), envelope)
    return defaults.page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponseBase:
    """``handler500``: API paths get their envelope's generic 500, pages Django's."""
    for prefix, envelope in _API_PREFIXES:
        if request.path.startswith(prefix):
            return internal_error(envelope)
    return defaults.server_error(request)
