"""Work detached from the request that started it (usage records, chat generations)."""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any

_background: set[asyncio.Task[Any]] = set()


def run_in_background(coro: Any) -> asyncio.Task[Any]:
    """Start ``coro`` detached from the request (keeps a reference until it ends).

    It runs in a fresh context: the request's context carries asgiref's executor for
    ``sync_to_async`` calls, which is gone once the response is sent (under uvicorn
    the ORM would then fail with "CurrentThreadExecutor already quit")."""
    task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def drain_background() -> None:
    """Wait for detached tasks (tests)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
