"""Usage records: one row per finished generation, written even when the client hung up."""
from __future__ import annotations

from typing import Any

from inference import Finished

from .background import run_in_background
from .models import UsageRecord


async def record_usage(*, user: Any, token: Any, model: str, endpoint: str, finished: Finished) -> None:
    await UsageRecord.objects.acreate(
        user=user,
        token=token,
        model=model,
        endpoint=endpoint,
        prompt_tokens=finished.usage.prompt_tokens,
        completion_tokens=finished.usage.completion_tokens,
        finish_reason=finished.finish_reason,
        time_to_first_token_ms=int(finished.time_to_first_token * 1000) if finished.time_to_first_token else None,
        duration_ms=int(finished.duration * 1000),
    )


def record_usage_when_finished(stream: Any, principal: Any, model: str, endpoint: str) -> None:
    """Record a request's usage once it ends; detached, so it also happens after the
    client hung up (the abort still reports the tokens generated so far)."""
    async def record() -> None:
        finished = await stream.wait_finished()
        await record_usage(user=principal.user, token=principal.token, model=model, endpoint=endpoint,
                           finished=finished)

    run_in_background(record())
