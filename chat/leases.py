"""Leases on streaming answers: which process generates each one, so that any process can
tell an answer that is being written from one whose process is gone (a crash, ``kill -9``,
a restart) and take it over.

The process generating an answer writes its ``WORKER`` id (host, pid, nonce) and an
expiry on the row, and pushes the expiry on while it works (every save, and a heartbeat
in between). An answer is orphaned once its lease runs out, or at once when its process
ran on this host and has ended. Taking an answer over is one conditional ``UPDATE``: the
database lets exactly one process win.
"""
from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from .models import Message

HOST = socket.gethostname()
WORKER = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
LEASE = timedelta(seconds=30)
HEARTBEAT = 10.0  # seconds between renewals, well inside LEASE


def held(now: datetime | None = None) -> dict[str, Any]:
    """The fields that say this process holds an answer, until ``LEASE`` from ``now``."""
    return {"worker": WORKER, "lease_expires": (now or timezone.now()) + LEASE}


def has_ended(worker: str) -> bool:
    """Whether the process ``worker`` names has certainly ended: it ran on this host and
    its process id is free now (or is this process's, under another nonce). Elsewhere
    only its lease can tell."""
    try:
        host, pid, _ = worker.rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return False
    if host != HOST or worker == WORKER:
        return False
    if number == os.getpid():
        return True
    try:
        os.kill(number, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user
        return False
    return False


async def ended_workers() -> list[str]:
    """The workers of streaming answers whose process has certainly ended."""
    workers = Message.objects.filter(state=Message.State.STREAMING).values_list("worker", flat=True).distinct()
    return [w async for w in workers if has_ended(w)]


def orphaned(now: datetime, ended: list[str]) -> Q:
    """Streaming answers that no live process holds (``ended``: from ``ended_workers``)."""
    gone = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now) | Q(worker__in=ended)
    return Q(state=Message.State.STREAMING) & gone


async def claim(message_id: int, **changes: Any) -> bool:
    """Take over answer ``message_id`` if it is orphaned; True for the one process that
    wins. ``changes`` are written in the same ``UPDATE`` (and may finish the answer)."""
    worker = await Message.objects.filter(pk=message_id).values_list("worker", flat=True).afirst()
    now = timezone.now()
    ended = [worker] if worker is not None and has_ended(worker) else []
    fields = {**held(now), "updated_at": now, **changes}
    return await Message.objects.filter(orphaned(now, ended), pk=message_id).aupdate(**fields) == 1


async def renew(message_id: int) -> bool:
    """Push this process's lease on a streaming answer on; False when it is no longer ours."""
    return await Message.objects.filter(
        pk=message_id, worker=WORKER, state=Message.State.STREAMING
    ).aupdate(lease_expires=timezone.now() + LEASE) == 1
