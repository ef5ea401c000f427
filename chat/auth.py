"""Who is calling: small policy classes with one method each (after DRF).

``authenticate(request)`` tries them in order and returns a ``Principal`` or raises
the 401 ``ApiError``. Session callers must pass Django's CSRF check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from .errors import ApiError, authentication_error
from .models import ApiToken


@dataclass(frozen=True)
class Principal:
    user: Any  # the AUTH_USER_MODEL instance
    token: ApiToken | None = None

    @property
    def label(self) -> str:
        """What logs may show: the token prefix, or the user name. Never the secret."""
        return self.token.prefix if self.token else f"user:{self.user.get_username()}"


class BearerTokenAuthentication:
    """``Authorization: Bearer <secret>`` against hashed ``ApiToken`` rows."""

    async def authenticate(self, request: HttpRequest) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise authentication_error()
        token = await ApiToken.objects.select_related("owner").filter(prefix=ApiToken.prefix_of(secret)).afirst()
        if token is None or not token.matches(secret) or not token.is_active() or not token.owner.is_active:
            raise authentication_error()
        now = timezone.now()
        await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)
        token.last_used_at = now
        return Principal(user=token.owner, token=token)


def _csrf_failure(request: HttpRequest) -> str | None:
    noop = cast(Any, lambda r: None)
    check = CsrfViewMiddleware(noop)
    check.process_request(request)
    response = check.process_view(request, noop, (), {})
    return None if response is None else "CSRF check failed"


class SessionAuthentication:
    """A logged-in browser session, with Django's CSRF check on unsafe methods."""

    async def authenticate(self, request: HttpRequest) -> Principal | None:
        user = await request.auser()  # type: ignore[attr-defined]
        if not user or not user.is_authenticated:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS") and await sync_to_async(_csrf_failure)(request):
            raise ApiError(403, 10000, "CSRF verification failed")
        return Principal(user=user)


AUTHENTICATORS = (BearerTokenAuthentication(), SessionAuthentication())


async def authenticate(request: HttpRequest) -> Principal:
    for policy in AUTHENTICATORS:
        principal = await policy.authenticate(request)
        if principal is not None:
            return principal
    raise authentication_error()
