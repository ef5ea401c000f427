"""One reader of Server-Sent Events for every test: whole bodies, Django streaming responses
and httpx line streams; and a writer of canned streams for tests that fake a server."""
from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"


@dataclass(frozen=True)
class Event:
    """One event as the HTML spec's parser reads it, with its block as sent (``raw``)."""

    data: str
    id: str | None = None
    event: str | None = None
    raw: str = ""

    @property
    def done(self) -> bool:
        """The ``data: [DONE]`` that ends the APIs' streams."""
        return self.data == DONE

    @property
    def data_only(self) -> bool:
        """Framed as one ``data:`` line and nothing else, as the native and OpenAI APIs send."""
        return self.raw == f"data: {self.data}"

    def json(self) -> Any:
        return json.loads(self.data)


def parse_event(block: str) -> Event | None:
    """The event in one block (the lines between blank lines); None when it has no data
    (a comment such as a keep-alive). Data lines join with newlines; ``id`` and ``event``
    keep their last value."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in block.splitlines():
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if not data:
        return None
    return Event("\n".join(data), fields.get("id"), fields.get("event"), block)


def parse_sse(text: str) -> list[Event]:
    """Every event of a whole ``text/event-stream`` body."""
    return [event for block in text.split("\n\n") if (event := parse_event(block)) is not None]


async def read_sse(response: Any) -> list[Event]:
    """Every event of a Django streaming response, read to its end."""
    chunks = [c async for c in response.streaming_content]
    return parse_sse(b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks).decode())


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncIterator[Event]:
    """Events as they arrive on a stream of lines (httpx's ``Response.aiter_lines()``)."""
    block: list[str] = []
    async for line in lines:
        if line:
            block.append(line)
            continue
        event = parse_event("\n".join(block))
        block = []
        if event is not None:
            yield event


def encode_sse(*payloads: Any) -> bytes:
    """A canned stream: one ``data:`` event per payload (JSON, strings as they are)."""
    return b"".join(f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n".encode() for p in payloads)
