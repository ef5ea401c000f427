"""Limits on what one principal may ask for."""
from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache

from .errors import RATE_LIMITED, ApiError


def check_rate_limit(principal: Any) -> None:
    """Per-token requests-per-minute limit (fixed one-minute windows in Django's cache,
    shared by every process when the cache is Redis); raises 429 with Retry-After."""
    token = principal.token
    if token is None or not token.rate_limit_per_minute:
        return
    now = time.time()
    key = f"wai:rate:{token.pk}:{int(now // 60)}"
    count = 1 if cache.add(key, 1, timeout=90) else cache.incr(key)
    if count > token.rate_limit_per_minute:
        retry_after = max(1, 60 - int(now % 60))
        raise ApiError(429, RATE_LIMITED, f"Rate limit of {token.rate_limit_per_minute} requests per minute exceeded",
                       {"Retry-After": str(retry_after)})
