"""An answer being written: ``Generation`` drives one answer from the engine's pieces to
its database row (batched saves) and to its followers (channels group ``chat-msg-<id>``),
holding the answer's lease (``chat/leases.py``) while it runs. ``chat/turns.py`` starts
them; ``chat/follow.py`` reads them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.layers import get_channel_layer
from django.db import DatabaseError
from django.utils import timezone

from inference import Finished, InferenceError, RequestStream

from . import leases
from .background import run_in_background
from .errors import ApiError
from .models import Message
from .usage import record_usage

logger = logging.getLogger(__name__)

SAVE_INTERVAL = 0.5  # seconds between saves of a growing answer
FINISH_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between tries of an answer's final save
FINISH_WAIT = 10.0  # seconds an aborted request may take to report how it finished
_generations: dict[int, Generation] = {}  # message id -> running task in this process


def piece_group(message_id: int) -> str:
    return f"chat-msg-{message_id}"


def control_group(message_id: int) -> str:
    return f"chat-ctl-{message_id}"


def running(message_id: int) -> Generation | None:
    """The generation of answer ``message_id`` in this process, if any."""
    return _generations.get(message_id)


def running_ids() -> list[int]:
    return list(_generations)


def start(generation: Generation) -> None:
    _generations[generation.message_id] = generation
    run_in_background(generation.run())


async def announce_end(message_id: int) -> None:
    """Tell the followers of an answer that it ended (they read how from the database)."""
    try:
        await get_channel_layer().group_send(piece_group(message_id), {"type": "finish"})
    except Exception:  # noqa: BLE001 - followers also notice at their next check of the database
        logger.warning("could not announce the end of answer %s", message_id, exc_info=True)


class Generation:
    """Drives one answer: engine pieces -> database (batched) + channels group, holding
    the answer's lease while it runs."""

    def __init__(self, message_id: int, model: str, user: Any = None, token: Any = None,
                 stream: RequestStream | None = None) -> None:
        self.message_id = message_id
        self.model = model
        self.user = user
        self.token = token
        self.stream = stream
        self.content = ""
        self.prior_tokens = 0  # tokens of the answer generated before a restart
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        if self.stream is not None:
            self.stream.abort()

    async def open(self) -> RequestStream | None:
        """The engine stream to read; None when there is nothing left to generate."""
        return self.stream

    async def run(self) -> None:
        """Generate to the end. Every way out writes the answer's end (``finally``) except
        cancellation: then the process is going away and the answer stays ``streaming``
        for another process (or the next start) to resume."""
        helpers = [asyncio.create_task(self._listen()), asyncio.create_task(self._keep_lease())]
        state, error, cancelled = Message.State.DONE, "", False
        try:
            self.stream = await self.open()
            if self.stream is not None:
                if self.stopping:
                    self.stream.abort()
                await self._pump(self.stream)
        except ApiError as exc:  # resuming: the model cannot serve any more
            state, error = Message.State.ERROR, exc.message
        except InferenceError as exc:  # GenerationFailed, or a resumed prompt that no longer fits
            state, error = Message.State.ERROR, str(exc)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:  # noqa: BLE001 - never lose the partial answer
            logger.exception("chat generation %s failed", self.message_id)
            state, error = Message.State.ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            for task in helpers:
                task.cancel()
            if self.stream is not None:
                self.stream.abort()  # a no-op once it finished
            try:
                if not cancelled:
                    await self._finish(state, error)
            finally:
                _generations.pop(self.message_id, None)

    async def _pump(self, stream: RequestStream) -> None:
        layer = get_channel_layer()
        last_save = time.monotonic()
        async for piece in stream:
            self.content += piece
            await layer.group_send(piece_group(self.message_id),
                                   {"type": "piece", "end": len(self.content), "text": piece})
            if time.monotonic() - last_save >= SAVE_INTERVAL:
                await self._save_progress()
                last_save = time.monotonic()

    async def _listen(self) -> None:
        """Stop when asked through the control group (a stop posted to another worker)."""
        layer, group = get_channel_layer(), control_group(self.message_id)
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            try:
                while True:
                    if (await layer.receive(channel)).get("type") == "stop":
                        self.stop()
            finally:
                await layer.group_discard(group, channel)
        except Exception:  # noqa: BLE001 - only stops posted to other workers are lost
            logger.warning("answer %s no longer hears stops from other workers", self.message_id, exc_info=True)

    async def _keep_lease(self) -> None:
        """Renew the lease between saves (the answer may wait in the queue, or for its model)."""
        while True:
            await asyncio.sleep(leases.HEARTBEAT)
            try:
                if not await leases.renew(self.message_id):
                    self.stop()  # deleted, or taken over after this process stalled past its lease
                    return
            except DatabaseError:
                logger.warning("could not renew the lease of answer %s", self.message_id, exc_info=True)

    async def _write(self, **fields: Any) -> bool:
        """Update the answer's row, renewing the lease, if this process still holds it."""
        now = timezone.now()
        changes = {**leases.held(now), "updated_at": now, **fields}
        return await Message.objects.filter(pk=self.message_id, worker=leases.WORKER).aupdate(**changes) == 1

    async def _save_progress(self) -> None:
        try:
            if not await self._write(content=self.content):
                self.stop()  # deleted, or another process holds it now
        except DatabaseError:  # the text is kept here: the next save writes all of it
            logger.warning("saving answer %s failed; the next save catches up", self.message_id, exc_info=True)

    async def _finish(self, state: str, error: str) -> None:
        """Write the end of the answer; then tell its followers and record usage."""
        finished = await self._finished()
        fields: dict[str, Any] = {"content": self.content, "state": state, "error": error, "worker": "",
                                  "lease_expires": None}
        if finished is None:  # nothing was generated here (or the engine never said how it ended)
            reason = "error" if error else "abort" if self.stopping else "length"  # length: no tokens were left
            if self.prior_tokens:
                fields["completion_tokens"] = self.prior_tokens
        else:
            reason = finished.finish_reason
            ttft = finished.time_to_first_token
            fields.update(
                completion_tokens=self.prior_tokens + finished.usage.completion_tokens,
                prompt_tokens=finished.usage.prompt_tokens - self.prior_tokens,
                time_to_first_token_ms=int(ttft * 1000) if ttft else None,
                tokens_per_second=round(finished.tokens_per_second, 2) or None,
            )
        if reason == "abort" and state == Message.State.DONE:
            fields["state"] = Message.State.STOPPED
        fields["finish_reason"] = reason
        if not await self._save_end(fields):
            return
        await announce_end(self.message_id)
        if finished is not None:
            try:
                await record_usage(user=self.user, token=self.token, model=self.model, endpoint="chat",
                                   finished=finished)
            except DatabaseError:
                logger.exception("could not record the usage of answer %s", self.message_id)

    async def _finished(self) -> Finished | None:
        if self.stream is None or self.stream.finished is not None:
            return self.stream.finished if self.stream else None
        try:
            return await asyncio.wait_for(self.stream.wait_finished(), FINISH_WAIT)
        except TimeoutError:
            logger.warning("answer %s: the engine did not report how it finished", self.message_id)
            return None

    async def _save_end(self, fields: dict[str, Any]) -> bool:
        """Write the end, through passing database errors (a locked SQLite, a failover).
        False when it cannot, or another process holds the answer now: it then stays
        ``streaming`` until its lease runs out and a process resumes it."""
        delays = iter(FINISH_RETRIES)
        while True:
            try:
                return await self._write(**fields)
            except DatabaseError:
                delay = next(delays, None)
                if delay is None:
                    logger.exception("could not save the end of answer %s", self.message_id)
                    return False
                logger.warning("saving the end of answer %s failed; retrying", self.message_id, exc_info=True)
                await asyncio.sleep(delay)
