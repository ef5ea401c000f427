"""Fair share: limits on what one principal (an API token, or a browser session's user) may ask for.

Two limits, both kept in Django's cache so that every worker process shares them when the
cache is Redis (``REDIS_URL``), and each process enforces them on its own otherwise:

- requests per minute (``check_rate_limit``, applied by the API door): the token's
  ``rate_limit_per_minute``, or ``SESSION_RATE_LIMIT_PER_MINUTE`` for a browser session;
- generations at once (``generation_slot``, taken where a generation starts): the token's
  ``max_concurrent_generations``, else ``GENERATIONS_PER_PRINCIPAL``. A slot is a cache key
  held under a lease that its holder renews while the generation runs, so a worker that dies
  holding slots frees them within ``LEASE_SECONDS``. For every limit, 0 means none.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from django.conf import settings
from django.core.cache import cache

from inference import RequestStream

from .auth import Principal
from .background import run_in_background
from .errors import CAPACITY, RATE_LIMITED, ApiError
from .models import ApiToken

LEASE_SECONDS = 60  # a slot not renewed for this long (its process is gone) is free again
RENEW_SECONDS = LEASE_SECONDS / 3
SLOT_RETRY_AFTER_SECONDS = 2  # what a refused caller is told; slots free as generations end


def principal_key(user: Any, token: ApiToken | None) -> str:
    """Whom a limit counts: the token when there is one, else the (session) user."""
    return f"token:{token.pk}" if token is not None else f"user:{user.pk}"


def check_rate_limit(principal: Principal) -> None:
    """Count one request against the caller's requests-per-minute limit (fixed one-minute
    windows); raises 429/3036 with ``Retry-After`` past it."""
    token = principal.token
    limit = token.rate_limit_per_minute if token is not None else settings.SESSION_RATE_LIMIT_PER_MINUTE
    if not limit:
        return
    now = time.time()
    key = f"wai:rate:{principal_key(principal.user, token)}:{int(now // 60)}"
    count = 1 if cache.add(key, 1, timeout=90) else cache.incr(key)
    if count > limit:
        retry_after = max(1, 60 - int(now % 60))
        raise ApiError(429, RATE_LIMITED, f"Rate limit of {limit} requests per minute exceeded",
                       {"Retry-After": str(retry_after)})


def generations_allowed(token: ApiToken | None) -> int:
    """How many generations the caller may run at once; 0 means no limit."""
    if token is not None and token.max_concurrent_generations is not None:
        return token.max_concurrent_generations
    return int(settings.GENERATIONS_PER_PRINCIPAL)


class GenerationSlot:
    """One of a principal's concurrent generations: the cache key ``key`` holding ``lease``
    (``key`` is None when the principal has no limit, and then nothing is held)."""

    def __init__(self, key: str | None, lease: str = "") -> None:
        self.key = key
        self.lease = lease
        self.handed_over = False
        self._released = key is None

    def release_when_finished(self, stream: RequestStream) -> None:
        """Hand the slot to the generation ``stream``: renewed while it runs, released when it
        ends however it ends (finished, aborted because its client left, failed)."""
        self.handed_over = True
        if not self._released:
            run_in_background(self._hold(stream))

    async def _hold(self, stream: RequestStream) -> None:
        finished = asyncio.ensure_future(stream.wait_finished())
        try:
            while not (await asyncio.wait({finished}, timeout=RENEW_SECONDS))[0]:
                await cache.atouch(self.key, LEASE_SECONDS)
        finally:
            finished.cancel()
            await self.release()

    async def release(self) -> None:
        """Free the slot, unless its lease ran out and another generation holds it now."""
        if self._released:
            return
        self._released = True
        if await cache.aget(self.key) == self.lease:
            await cache.adelete(self.key)


@asynccontextmanager
async def generation_slot(user: Any, token: ApiToken | None) -> AsyncIterator[GenerationSlot]:
    """Take one of the caller's generation slots for the block; raises 429/3040 with
    ``Retry-After`` when they are all taken.

    Start the generation inside the block and hand the slot to it with
    ``slot.release_when_finished(stream)``; leaving the block without doing so (an error
    before the generation started) releases the slot.
    """
    slot = await _acquire(user, token)
    try:
        yield slot
    finally:
        if not slot.handed_over:
            await slot.release()


async def _acquire(user: Any, token: ApiToken | None) -> GenerationSlot:
    allowed = generations_allowed(token)
    if not allowed:
        return GenerationSlot(None)
    owner = principal_key(user, token)
    lease = uuid.uuid4().hex
    for index in range(allowed):
        key = f"wai:generation:{owner}:{index}"
        if await cache.aadd(key, lease, timeout=LEASE_SECONDS):
            return GenerationSlot(key, lease)
    whose = "this token" if token is not None else "this user"
    raise ApiError(429, CAPACITY, f"Too many generations at once: {whose} may run {allowed}; "
                                  "retry when one finishes.", {"Retry-After": str(SLOT_RETRY_AFTER_SECONDS)})
