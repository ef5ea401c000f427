"""Chat turns: generation that belongs to the conversation, not to the browser tab.

``start_turn`` fits the conversation into the model's context, submits it, saves the
user message and a pending assistant message, and starts a ``Generation``
(``chat/answers.py``) on the server's event loop: it saves the answer as it grows and fans
the pieces out, so any worker process can follow any answer (``chat/follow.py``).

No answer is lost. The process generating an answer holds a lease on its row
(``chat/leases.py``). An answer whose process is gone (a crash, a restart) is taken over
by one process — at server start, by a periodic sweep, or by whoever follows, stops or
continues that conversation — and resumed where it stopped: the conversation's prompt
plus the saved partial answer, for the tokens it had left, appended to the same message.
"""
from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.signals import request_started
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from inference import (
    ContextWindowExceeded,
    Engine,
    FittedPrompt,
    Guide,
    QueueFull,
    RemoteEngine,
    RequestStream,
    SamplingParams,
)

from . import answers, leases
from .answers import Generation, announce_end, control_group
from .catalog import get_engine, resolve_entry
from .errors import INVALID_INPUT, ApiError, from_inference, invalid
from .generation import submit_remote
from .limits import generation_slot
from .models import CatalogEntry, Conversation, Message
from .tree import Tree, dialogue

logger = logging.getLogger(__name__)

INTERRUPTED = "Interrupted: the server stopped while answering"
_SWEEP = "chat.turns.sweep"
_sweeper: list[asyncio.Task[None]] = []  # the sweeping task, once started


@dataclass(frozen=True)
class Turn:
    user_message: Message
    assistant_message: Message


def _sampling(data: dict[str, Any]) -> SamplingParams:
    """The settings saved with an answer (``dataclasses.asdict``), back as ``SamplingParams``."""
    known = {f.name for f in dataclasses.fields(SamplingParams)}
    values = {k: v for k, v in data.items() if k in known}
    values["stop"] = tuple(values.get("stop", ()))
    values["stop_token_ids"] = tuple(values.get("stop_token_ids", ()))
    if isinstance(values.get("guide"), dict):
        values["guide"] = Guide(**values["guide"])
    return SamplingParams(**values)


class _AfterLeaf:
    """The default place of a new question: after the branch the conversation shows."""


AFTER_LEAF = _AfterLeaf()


async def start_turn(conversation: Conversation, entry: CatalogEntry, content: str, params: SamplingParams,
                     user: Any, token: Any = None, system_prompt: str | None = None,
                     parent_id: int | None | _AfterLeaf = AFTER_LEAF) -> Turn:
    """Ask ``content`` after ``parent_id`` (an answer of this conversation; ``None`` starts a
    new first question, the sibling of the old one: an edit). Raises ``ApiError`` (409 busy,
    413 context, 429 queue, 503…) before anything is saved. ``system_prompt``, when given,
    replaces the conversation's. One turn at a time is the database's rule (a unique
    constraint on streaming answers), so two posts racing through different workers cannot
    both start."""
    await resume_orphans(conversation.pk)
    tree = await sync_to_async(Tree.of)(conversation)
    if isinstance(parent_id, _AfterLeaf):
        after = tree.leaf(conversation)
    else:
        after = parent_id
        if after is not None and (after not in tree.messages or tree.messages[after].role != Message.Role.ASSISTANT):
            raise invalid("'parent_id' must be an answer of this conversation, or null for a first question")
    return await _start(conversation, entry, params, user, token, system_prompt, tree.path(after), content, after)


async def regenerate(conversation: Conversation, entry: CatalogEntry, answer_id: int, params: SamplingParams,
                     user: Any, token: Any = None, system_prompt: str | None = None) -> Turn:
    """A new answer to the question ``answer_id`` answered, kept beside it as an alternative;
    the conversation then shows the new one."""
    await resume_orphans(conversation.pk)
    tree = await sync_to_async(Tree.of)(conversation)
    answer = tree.messages.get(answer_id)
    if answer is None or answer.role != Message.Role.ASSISTANT or answer.parent_id is None:
        raise ApiError(404, 7000, "Message not found")
    return await _start(conversation, entry, params, user, token, system_prompt, tree.path(answer.parent_id),
                        None, answer.parent_id)


async def _start(conversation: Conversation, entry: CatalogEntry, params: SamplingParams, user: Any, token: Any,
                 system_prompt: str | None, path: list[Message], content: str | None, parent: int | None) -> Turn:
    """Generate an answer to ``path`` (ending with the question) or, with ``content``, to a
    new question saved after ``parent``."""
    if system_prompt is not None:
        conversation.system_prompt = system_prompt
    engine = await get_engine(entry)
    previous = dialogue(path)
    history = [{"role": m.role, "content": m.content} for m in previous]
    if content is not None:
        history.append({"role": "user", "content": content})
    budget = entry.context_length - params.max_tokens
    if budget <= 0:
        raise invalid(f"'max_tokens' must leave room for input in the context window ({entry.context_length})")
    log_tag = f"user:{user.get_username()}"
    if isinstance(engine, RemoteEngine):  # the whole conversation goes; the upstream's context rules
        system = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []
        async with generation_slot(user, token) as slot:
            stream = await submit_remote(engine, entry, params, None, system + history, False, log_tag)
            slot.release_when_finished(stream)
        fitted = FittedPrompt([0] * stream.num_prompt_tokens, 0)
    else:
        try:
            fitted = await asyncio.to_thread(engine.fit_history, conversation.system_prompt, history, budget)
        except ContextWindowExceeded as exc:
            raise from_inference(exc) from None
        async with generation_slot(user, token) as slot:  # 429/3040 past the owner's generations at once
            stream = engine.submit(fitted.token_ids, params, log_tag=log_tag)  # may raise QueueFull
            slot.release_when_finished(stream)

    def save() -> Turn:
        with transaction.atomic():
            kept = [m.pk for m in previous[fitted.first_included:]]
            dropped = [m.pk for m in previous[: fitted.first_included]]
            Message.objects.filter(pk__in=kept).update(in_context=True)
            Message.objects.filter(pk__in=dropped).update(in_context=False)
            if content is not None or parent is None:
                question = Message.objects.create(conversation=conversation, parent_id=parent,
                                                  role=Message.Role.USER, content=content or "")
            else:
                question = Message.objects.get(pk=parent, conversation=conversation)
            reply = Message.objects.create(
                conversation=conversation, parent=question, role=Message.Role.ASSISTANT,
                state=Message.State.STREAMING, prompt_tokens=len(fitted.token_ids), model=entry.name,
                sampling=dataclasses.asdict(params), token=token, **leases.held(),
            )
            conversation.current_leaf = reply
            fields = ["updated_at", "system_prompt", "current_leaf"]
            if not conversation.title and content is not None:
                conversation.title = " ".join(content.split())[:60]
                fields.append("title")
            if conversation.model != entry.name:
                conversation.model = entry.name
                fields.append("model")
            conversation.save(update_fields=fields)
            return Turn(question, reply)

    try:
        turn = await sync_to_async(save)()
    except BaseException as exc:
        stream.abort()
        # The one constraint a turn's rows can break here is one streaming answer per conversation
        # (a racing post won): 409, even when that answer has finished by now (they can be quick).
        if isinstance(exc, IntegrityError) and await Conversation.objects.filter(pk=conversation.pk).aexists():
            raise ApiError(409, INVALID_INPUT,
                           "An answer is still streaming in this conversation; stop it first") from None
        raise
    answers.start(Generation(turn.assistant_message.pk, entry.name, user, token, stream))
    return turn


class Resumption(Generation):
    """An answer cut by a crash or restart, continued from its saved text: the prompt the
    conversation fits into now, plus the partial answer's tokens, for the tokens it had left."""

    def __init__(self, message_id: int) -> None:
        super().__init__(message_id, model="")

    async def open(self) -> RequestStream | None:
        message = await Message.objects.select_related("conversation__owner", "token").aget(pk=self.message_id)
        conversation = message.conversation
        self.model, self.user, self.token = message.model, conversation.owner, message.token
        self.content = message.content
        params = _sampling(message.sampling or {})
        entry = await resolve_entry(message.model)
        engine = await get_engine(entry)
        if isinstance(engine, RemoteEngine):  # an upstream cannot continue a partial answer: it ends here
            return None
        tree = await sync_to_async(Tree.of)(conversation)
        previous = dialogue(tree.path(message.parent_id))
        history = [{"role": m.role, "content": m.content} for m in previous]
        budget = entry.context_length - params.max_tokens
        fitted = await asyncio.to_thread(engine.fit_history, conversation.system_prompt, history, budget)
        partial = await asyncio.to_thread(_continuation_ids, engine, message.content)
        self.prior_tokens = len(partial)
        rest = dataclasses.replace(params, max_tokens=max(params.max_tokens - len(partial), 1),
                                   min_tokens=max(params.min_tokens - len(partial), 0))
        logger.info("resuming answer %s after %d tokens", self.message_id, len(partial))
        while not self.stopping and len(partial) < params.max_tokens:
            try:
                return engine.submit(fitted.token_ids + partial, rest, log_tag=f"user:{self.user.get_username()}")
            except QueueFull as exc:
                await asyncio.sleep(exc.retry_after)
        return None


def _continuation_ids(engine: Engine, text: str) -> list[int]:
    """Token ids of ``text`` continuing a prompt: ``text`` encoded alone, less what the
    tokenizer puts before any text (a BOS token, for some)."""
    lead = engine.encode(prompt="", raw=True)
    ids = engine.encode(prompt=text, raw=True) if text else []
    return ids[len(lead):] if lead and ids[: len(lead)] == lead else ids


async def revive(message: Message) -> None:
    """Take over ``message`` if it is streaming but no live process generates it, and
    resume it here; one process wins. An answer saved without its sampling settings
    (before answers could be resumed) is finished as interrupted instead."""
    if answers.running(message.pk) is not None:
        return
    if message.sampling is None:
        if await leases.claim(message.pk, state=Message.State.STOPPED, error=INTERRUPTED, worker="",
                              lease_expires=None):
            await announce_end(message.pk)
        return
    generation = Resumption(message.pk)
    if await leases.claim(message.pk):
        answers.start(generation)


async def resume_orphans(conversation_id: int | None = None) -> None:
    """Revive every orphaned answer (of one conversation, or of all)."""
    ended = await leases.ended_workers()
    rows = Message.objects.filter(leases.orphaned(timezone.now(), ended)).exclude(pk__in=answers.running_ids())
    if conversation_id is not None:
        rows = rows.filter(conversation_id=conversation_id)
    async for message in rows:
        await revive(message)


async def stop(message: Message) -> None:
    """Stop an answer wherever it is generated; an orphan (its process is gone) is
    stopped here."""
    local = answers.running(message.pk)
    if local is not None:
        local.stop()
        return
    await get_channel_layer().group_send(control_group(message.pk), {"type": "stop"})
    if await leases.claim(message.pk, state=Message.State.STOPPED, finish_reason="abort", worker="",
                          lease_expires=None):
        await announce_end(message.pk)


def resume_interrupted() -> None:
    """Called once at server start (``waiproject/asgi.py``): resume the answers cut by a
    crash or restart, then keep sweeping for answers of processes that die later. It
    never delays startup: the sweeps are a task on the server's event loop, started at
    once if the server loads the application inside its loop, else by the first request
    (a health probe, a page reconnecting its stream); a resumed answer waits there for
    its model."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        request_started.connect(_sweep_from_first_request, dispatch_uid=_SWEEP)
    else:
        _start_sweeping()


async def _sweep_from_first_request(sender: Any, **kwargs: Any) -> None:
    request_started.disconnect(dispatch_uid=_SWEEP)
    _start_sweeping()


def _start_sweeping() -> None:
    """Start the sweeps once per process: a task for the process's life (not a background
    job that tests wait for), in a fresh context (it may start from a request)."""
    if not _sweeper:
        _sweeper.append(asyncio.get_running_loop().create_task(_sweep(), context=contextvars.Context()))


async def _sweep() -> None:
    while True:
        try:
            await resume_orphans()
        except DatabaseError:  # not migrated yet, or the database is away: try again later
            logger.warning("could not look for interrupted answers", exc_info=True)
        await asyncio.sleep(leases.LEASE.total_seconds())
