"""Work detached from the request that started it (usage records, chat generations)."""
from __future__ import annotations

import asyncio
from typing import Any

_background: set[asyncio.Task[Any]] = set()


def run_in_background(coro: Any) -> asyncio.Task[Any]:
    """Start ``coro`` detached from the request (keeps a reference until it ends)."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def drain_background() -> None:
    """Wait for detached tasks (tests)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
