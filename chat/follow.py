"""Following an answer as Server-Sent Events, from any worker process, from any offset.

Event ids are character offsets into the answer, so ``Last-Event-ID`` resumes exactly.
A follower that finds its answer orphaned (its process is gone) revives it: the answer
goes on, and so does the stream.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer

from .answers import SAVE_INTERVAL, piece_group, running
from .errors import INTERNAL
from .models import Message
from .sse import DONE, event
from .turns import revive

KEEPALIVE = 15.0  # seconds of silence before a follower re-checks the database


def final_event(message: Message) -> str:
    """The last event of a finished answer: usage and stats, or ``event: error``."""
    if message.state == Message.State.ERROR:
        return event({"errors": [{"code": INTERNAL, "message": message.error or "Generation failed"}]},
                     name="error", event_id=len(message.content))
    prompt, completion = message.prompt_tokens or 0, message.completion_tokens or 0
    return event({
        "response": "",
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "state": message.state,
        "finish_reason": message.finish_reason or None,
        "time_to_first_token_ms": message.time_to_first_token_ms,
        "tokens_per_second": message.tokens_per_second,
    }, event_id=len(message.content)) + DONE


async def follow(message_id: int, offset: int = 0) -> AsyncIterator[str]:
    """SSE events of an answer from character ``offset`` on: what is saved, then live
    pieces until it ends. Subscribes before reading so no piece falls between."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = piece_group(message_id)
    await layer.group_add(group, channel)
    try:
        message = await Message.objects.aget(pk=message_id)
        if message.state == Message.State.STREAMING and running(message_id) is None:
            await revive(message)  # resumed here if its process is gone
            message = await Message.objects.aget(pk=message_id)
        local = running(message_id)
        content = local.content if local is not None and len(local.content) > len(message.content) else message.content
        sent = min(max(offset, 0), len(content))
        if len(content) > sent:
            yield event({"response": content[sent:]}, event_id=len(content))
            sent = len(content)
        if message.state != Message.State.STREAMING:
            yield final_event(message)
            return
        while True:
            try:
                msg = await asyncio.wait_for(layer.receive(channel), timeout=KEEPALIVE)
            except TimeoutError:
                message = await Message.objects.aget(pk=message_id)
                if message.state != Message.State.STREAMING:
                    if len(message.content) > sent:
                        yield event({"response": message.content[sent:]}, event_id=len(message.content))
                    yield final_event(message)
                    return
                if running(message_id) is None:
                    await revive(message)
                yield ": keepalive\n\n"
                continue
            if msg["type"] == "finish":
                message = await Message.objects.aget(pk=message_id)
                if len(message.content) > sent:
                    yield event({"response": message.content[sent:]}, event_id=len(message.content))
                yield final_event(message)
                return
            end, text = msg["end"], msg["text"]
            start = end - len(text)
            if end <= sent:
                continue
            if start > sent:  # published before we subscribed and not saved yet: wait for the save
                for _ in range(25):
                    message = await Message.objects.aget(pk=message_id)
                    if len(message.content) >= start or message.state != Message.State.STREAMING:
                        break
                    await asyncio.sleep(SAVE_INTERVAL / 2)
                if len(message.content) > sent:
                    gap = message.content[sent:start] if len(message.content) >= start else message.content[sent:]
                    sent += len(gap)
                    yield event({"response": gap}, event_id=sent)
                if start > sent:
                    continue
            yield event({"response": text[sent - start:]}, event_id=end)
            sent = end
    finally:
        await layer.group_discard(group, channel)
