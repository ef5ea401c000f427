"""Sign-in throttling for the login page and the admin login (after django-axes).

``ThrottledModelBackend`` counts failed sign-ins per (username, client address) in Django's
cache (Redis when ``REDIS_URL`` is set, so all workers share the count). Past
``LOGIN_THROTTLE_ATTEMPTS`` failures within ``LOGIN_THROTTLE_WINDOW_SECONDS`` it refuses
without checking the password, and ``login_throttle_middleware`` turns the refusal into a 429.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import sync_and_async_middleware


def _key(username: str, request: HttpRequest | None) -> str:
    """The cache key for one (username, address) pair; hashed, so any username is a safe key."""
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    digest = hashlib.sha256(f"{username}\0{address}".encode()).hexdigest()
    return f"login-failures:{digest}"


def _record_failure(key: str) -> None:
    # The window starts at the first failure; later failures do not extend it.
    if cache.add(key, 1, settings.LOGIN_THROTTLE_WINDOW_SECONDS):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, settings.LOGIN_THROTTLE_WINDOW_SECONDS)


class ThrottledModelBackend(ModelBackend):
    """Django's ``ModelBackend`` that stops answering after too many failures."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        key = _key(username, request)
        if (cache.get(key) or 0) >= settings.LOGIN_THROTTLE_ATTEMPTS:
            if request is not None:
                request.login_throttled = True  # type: ignore[attr-defined]  # read by the middleware
            raise PermissionDenied  # authenticate() stops here; no other backend is tried
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            _record_failure(key)
        else:
            cache.delete(key)
        return user


def _refused(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """``response``, or the 429 when the backend refused this request's sign-in."""
    if not getattr(request, "login_throttled", False):
        return response
    minutes = max(1, settings.LOGIN_THROTTLE_WINDOW_SECONDS // 60)
    refusal = HttpResponse(f"Too many failed sign-in attempts. Try again in {minutes} minutes.\n", status=429,
                           content_type="text/plain; charset=utf-8")
    refusal["Retry-After"] = str(settings.LOGIN_THROTTLE_WINDOW_SECONDS)
    return refusal


@sync_and_async_middleware
def login_throttle_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Answers 429 instead of the login form when the backend refused a throttled sign-in."""
    if iscoroutinefunction(get_response):
        async def middleware_async(request: HttpRequest) -> HttpResponseBase:
            return _refused(request, await get_response(request))
        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _refused(request, get_response(request))
    return middleware
