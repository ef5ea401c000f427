"""Chat turns: generation that belongs to the conversation, not to the browser tab.

``start_turn`` fits the conversation into the model's context, submits it, saves the
user message and a pending assistant message, and starts a ``Generation`` task on the
server's event loop. The task saves the answer as it grows (batched writes) and fans
every piece out through the channels layer (group ``chat-msg-<id>``), so any worker
process can follow any answer: ``follow`` replays what is saved, then live pieces.
Event ids are character offsets into the answer, so ``Last-Event-ID`` resumes exactly.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inference import ContextWindowExceeded, Finished, GenerationFailed, RequestStream, SamplingParams

from .background import run_in_background
from .catalog import get_engine
from .errors import INTERNAL, ApiError, from_inference, invalid
from .models import CatalogEntry, Conversation, Message
from .sse import DONE, event
from .usage import record_usage

logger = logging.getLogger(__name__)

SAVE_INTERVAL = 0.5  # seconds between saves of a growing answer
KEEPALIVE = 15.0  # seconds of silence before a follower re-checks the database
ORPHAN_AFTER = timedelta(minutes=2)  # with several workers: a streaming answer silent this long lost its worker
_generations: dict[int, Generation] = {}  # message id -> running task in this process


def piece_group(message_id: int) -> str:
    return f"chat-msg-{message_id}"


def control_group(message_id: int) -> str:
    return f"chat-ctl-{message_id}"


@dataclass(frozen=True)
class Turn:
    user_message: Message
    assistant_message: Message


def _history(conversation: Conversation) -> list[Message]:
    """Messages that are part of the dialogue (answers that failed or are empty are not)."""
    return [
        m for m in conversation.messages.order_by("created_at", "id")
        if m.role == Message.Role.USER or (m.content and m.state in (Message.State.DONE, Message.State.STOPPED))
    ]


def _is_orphan(message: Message) -> bool:
    """A streaming answer that no process is generating any more (its server restarted)."""
    if message.pk in _generations:
        return False
    if not getattr(settings, "REDIS_URL", ""):  # one process: it would be in _generations
        return True
    return message.updated_at < timezone.now() - ORPHAN_AFTER


async def reap_orphans(conversation_id: int) -> None:
    """Finish answers left ``streaming`` by a process that is gone, keeping their text."""
    async for m in Message.objects.filter(conversation_id=conversation_id, state=Message.State.STREAMING):
        if _is_orphan(m):
            await Message.objects.filter(pk=m.pk, state=Message.State.STREAMING).aupdate(
                state=Message.State.STOPPED, error="Interrupted: the server stopped while answering",
                updated_at=timezone.now())
            await get_channel_layer().group_send(piece_group(m.pk), {"type": "finish"})


async def start_turn(conversation: Conversation, entry: CatalogEntry, content: str, params: SamplingParams,
                     user: Any, token: Any = None, system_prompt: str | None = None) -> Turn:
    """Run one chat turn; raises ``ApiError`` (409 busy, 413 context, 429 queue, 503…)
    before anything is saved. ``system_prompt``, when given, replaces the conversation's."""
    await reap_orphans(conversation.pk)
    if await conversation.messages.filter(state=Message.State.STREAMING).aexists():
        raise ApiError(409, 5004, "An answer is still streaming in this conversation; stop it first")
    if system_prompt is not None:
        conversation.system_prompt = system_prompt
    engine = await get_engine(entry)
    previous = await sync_to_async(_history)(conversation)
    history = [{"role": m.role, "content": m.content} for m in previous] + [{"role": "user", "content": content}]
    budget = entry.context_length - params.max_tokens
    if budget <= 0:
        raise invalid(f"'max_tokens' must leave room for input in the context window ({entry.context_length})")
    try:
        fitted = await asyncio.to_thread(engine.fit_history, conversation.system_prompt, history, budget)
    except ContextWindowExceeded as exc:
        raise from_inference(exc) from None
    stream = engine.submit(fitted.token_ids, params, log_tag=f"user:{user.get_username()}")  # may raise QueueFull

    def save() -> Turn:
        with transaction.atomic():
            kept = [m.pk for m in previous[fitted.first_included:]]
            dropped = [m.pk for m in previous[: fitted.first_included]]
            Message.objects.filter(pk__in=kept).update(in_context=True)
            Message.objects.filter(pk__in=dropped).update(in_context=False)
            user_msg = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content)
            reply = Message.objects.create(
                conversation=conversation, role=Message.Role.ASSISTANT, state=Message.State.STREAMING,
                prompt_tokens=len(fitted.token_ids),
            )
            fields = ["updated_at", "system_prompt"]
            if not conversation.title:
                conversation.title = " ".join(content.split())[:60]
                fields.append("title")
            if conversation.model != entry.name:
                conversation.model = entry.name
                fields.append("model")
            conversation.save(update_fields=fields)
            return Turn(user_msg, reply)

    try:
        turn = await sync_to_async(save)()
    except BaseException:
        stream.abort()
        raise
    generation = Generation(turn.assistant_message.pk, stream, entry.name, user, token)
    _generations[generation.message_id] = generation
    run_in_background(generation.run())
    return turn


class Generation:
    """Drives one answer: engine pieces -> database (batched) + channels group."""

    def __init__(self, message_id: int, stream: RequestStream, model: str, user: Any, token: Any) -> None:
        self.message_id = message_id
        self.stream = stream
        self.model = model
        self.user = user
        self.token = token
        self.content = ""

    def stop(self) -> None:
        self.stream.abort()

    async def run(self) -> None:
        layer = get_channel_layer()
        control = await layer.new_channel()
        await layer.group_add(control_group(self.message_id), control)
        listener = asyncio.get_running_loop().create_task(self._listen(layer, control))
        last_save = time.monotonic()
        state, error = Message.State.DONE, ""
        try:
            async for piece in self.stream:
                self.content += piece
                await layer.group_send(piece_group(self.message_id),
                                       {"type": "piece", "end": len(self.content), "text": piece})
                if time.monotonic() - last_save >= SAVE_INTERVAL:
                    await Message.objects.filter(pk=self.message_id).aupdate(content=self.content,
                                                                             updated_at=timezone.now())
                    last_save = time.monotonic()
        except GenerationFailed as exc:
            state, error = Message.State.ERROR, str(exc)
        except Exception as exc:  # noqa: BLE001 - never lose the partial answer
            logger.exception("chat generation %s failed", self.message_id)
            state, error = Message.State.ERROR, f"{type(exc).__name__}: {exc}"
            self.stream.abort()
        finally:
            listener.cancel()
            await layer.group_discard(control_group(self.message_id), control)
        finished = self.stream.finished or await self.stream.wait_finished()
        if finished.finish_reason == "abort":
            state = Message.State.STOPPED
        await self._finalize(finished, state, error)
        _generations.pop(self.message_id, None)
        await layer.group_send(piece_group(self.message_id), {"type": "finish"})

    async def _listen(self, layer: Any, channel: str) -> None:
        while True:
            msg = await layer.receive(channel)
            if msg.get("type") == "stop":
                self.stop()

    async def _finalize(self, finished: Finished, state: str, error: str) -> None:
        await Message.objects.filter(pk=self.message_id).aupdate(
            content=self.content,
            state=state,
            error=error,
            finish_reason=finished.finish_reason,
            completion_tokens=finished.usage.completion_tokens,
            prompt_tokens=finished.usage.prompt_tokens,
            time_to_first_token_ms=int(finished.time_to_first_token * 1000) if finished.time_to_first_token else None,
            tokens_per_second=round(finished.tokens_per_second, 2) or None,
            updated_at=timezone.now(),
        )
        await record_usage(user=self.user, token=self.token, model=self.model, endpoint="chat",
                           finished=finished)


async def stop(message: Message) -> None:
    """Stop an answer wherever it is generated; an orphan (its process is gone) is
    marked stopped here."""
    local = _generations.get(message.pk)
    if local is not None:
        local.stop()
        return
    await get_channel_layer().group_send(control_group(message.pk), {"type": "stop"})
    await reap_orphans(message.conversation_id)


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
        if message.state == Message.State.STREAMING and _is_orphan(message):
            await reap_orphans(message.conversation_id)
            message = await Message.objects.aget(pk=message_id)
        local = _generations.get(message_id)
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


def resume_interrupted() -> None:
    """Called once at server start: continue answers cut by a crash (placeholder)."""
