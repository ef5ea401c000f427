"""What callers get back, without a model."""
from __future__ import annotations

import asyncio

from inference.outputs import Finished, RequestStream, Usage


def test_events_for_a_closed_event_loop_are_refused_not_raised() -> None:
    loop = asyncio.new_event_loop()
    stream = RequestStream("r", 3, loop, abort=lambda rid: None)
    loop.close()
    assert stream.push(["text"]) is False


async def test_pieces_then_the_finish_arrive_in_order() -> None:
    aborted: list[str] = []
    stream = RequestStream("r", 3, asyncio.get_running_loop(), abort=aborted.append)
    assert stream.push(["a", "b"]) and stream.push([Finished("stop", Usage(3, 2), 0.1, 0.2)])
    assert await stream.text() == "ab"
    assert stream.finished is not None and stream.finished.usage.total_tokens == 5
    stream.abort()
    assert aborted == []  # finished already: nothing to abort
