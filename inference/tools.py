"""Tool calling: how tools reach the prompt, the grammar that makes calls well-formed, and
how calls are read back out of the generated text (whole, or piece by piece as it streams).

The format is Hermes' (NousResearch), the one Qwen 2.5 and many fine-tunes were trained on:
the system prompt lists the functions' JSON signatures inside ``<tools></tools>``, and the
model answers with one block per call::

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

The grammar (``tool_guide``) makes every call name a listed function and its arguments
valid against that function's ``parameters`` schema: with ``required`` or a named function
the answer is one or more calls; with ``auto`` it is either calls or plain text (text that
does not start with ``<``). Earlier calls and tool results in the conversation are written
back in the same format (results as user turns inside ``<tool_response></tool_response>``),
so any chat template renders them. Pure Python.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .guided import Guide, generation_schema

MAX_PARALLEL_CALLS = 8  # a small model may repeat a call until its budget runs out; this bounds it
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
NAME_RULE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_HEADER = re.compile(r'<tool_call>\{"name": "([A-Za-z0-9_-]{1,64})", "arguments": ')
_ARGS_END = "}" + CALL_CLOSE
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
SYSTEM_TEMPLATE = (
    "You can call functions. Their signatures, as JSON Schema, are inside <tools></tools>:\n"
    "<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with one <tool_call></tool_call> block per call, each holding a JSON "
    "object with the function's name and its arguments:\n"
    '<tool_call>{{"name": <function-name>, "arguments": <arguments-object>}}</tool_call>\n'
    "Results come back inside <tool_response></tool_response>."
)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def signature(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


def tool_guide(tools: list[Tool], choice: str | None, parallel: bool = True) -> Guide | None:
    """The grammar for ``tool_choice`` ``choice``: ``auto`` (calls or text), ``required``
    (calls), a function's name (calls of it), ``none`` (None: no tool, no grammar)."""
    if choice == "none" or not tools:
        return None
    chosen = tools if choice in ("auto", "required", None) else [t for t in tools if t.name == choice]
    rules = []
    for i, tool in enumerate(chosen):
        schema = json.dumps({**generation_schema(tool.parameters), "x-guidance": JSON_STYLE}, ensure_ascii=False)
        rules.append(f'call_{i}: "{CALL_OPEN}{{\\"name\\": \\"{tool.name}\\", \\"arguments\\": " args_{i} '
                     f'"{_ARGS_END}"\nargs_{i}: %json {schema}')
    calls = f'call ("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}' if parallel else "call"
    start = "calls | TEXT" if choice in ("auto", None) else "calls"
    lines = [f"start: {start}", f"calls: {calls}", "call: " + " | ".join(f"call_{i}" for i in range(len(chosen))),
             *rules, r"TEXT: /[^<][\s\S]*/"]
    return Guide("lark", "\n".join(lines))


def system_prompt(tools: list[Tool]) -> str:
    return SYSTEM_TEMPLATE.format(tools="\n".join(json.dumps(t.signature(), ensure_ascii=False) for t in tools))


def call_text(name: str, arguments: str) -> str:
    return f'{CALL_OPEN}{{"name": "{name}", "arguments": {arguments}}}{CALL_CLOSE}'


def render_messages(messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, str]]:
    """Plain ``{role, content}`` messages for the chat template: the tools' system prompt
    (joined to the conversation's own system message), assistant calls as call blocks,
    tool results as user turns. ``messages`` may hold ``tool_calls`` (a list of
    ``ToolCall``) on assistant messages and role ``tool``."""
    out: list[dict[str, str]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            blocks = "\n".join(call_text(c.name, c.arguments) for c in m["tool_calls"])
            content = f"{content}\n{blocks}" if content else blocks
        elif role == "tool":
            response = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + response}
                continue
            role, content = "user", response
        out.append({"role": role, "content": content})
    if tools:
        prompt = system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


@dataclass
class ParsedDelta:
    """What a piece of generated text adds: plain text, and/or call pieces
    (``(index, name)`` for a call that starts, ``(index, text)`` for its arguments)."""

    text: str = ""
    starts: list[tuple[int, str]] = field(default_factory=list)
    arguments: list[tuple[int, str]] = field(default_factory=list)


class ToolCallParser:
    """Reads calls out of generated text as it arrives. The answer is either text (it does
    not start with ``<tool_call>``) or calls; argument text is handed out as soon as it is
    known not to be the call's closing ``}</tool_call>``."""

    def __init__(self) -> None:
        self.buffer = ""
        self.mode = "start"  # start | text | header | arguments
        self.calls: list[list[str]] = []  # [name, arguments]

    def feed(self, piece: str) -> ParsedDelta:
        self.buffer += piece
        delta = ParsedDelta()
        while True:
            if self.mode == "text":
                delta.text += self.buffer
                self.buffer = ""
                return delta
            if self.mode in ("start", "header"):
                head = self.buffer.lstrip("\n") if self.mode == "header" else self.buffer
                match = _HEADER.match(head)
                if match:
                    self.calls.append([match.group(1), ""])
                    delta.starts.append((len(self.calls) - 1, match.group(1)))
                    self.buffer = head[match.end():]
                    self.mode = "arguments"
                    continue
                if _could_start(head):
                    return delta
                if self.mode == "header":  # text after the calls: kept as text
                    self.mode = "text"
                    continue
                self.mode = "text"
                continue
            end = self.buffer.find(_ARGS_END)
            if end >= 0:
                self._arguments(delta, self.buffer[:end])
                self.buffer = self.buffer[end + len(_ARGS_END):]
                self.mode = "header"
                continue
            keep = _partial_suffix(self.buffer, _ARGS_END)
            self._arguments(delta, self.buffer[:len(self.buffer) - keep])
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return delta

    def finish(self) -> ParsedDelta:
        """The rest, at the end of the answer (an unfinished call keeps what it has)."""
        delta = ParsedDelta()
        if self.mode == "arguments":
            self._arguments(delta, self.buffer)
        elif self.mode in ("start", "text") or self.buffer.strip():
            delta.text = self.buffer
        self.buffer = ""
        return delta

    def _arguments(self, delta: ParsedDelta, text: str) -> None:
        if text:
            index = len(self.calls) - 1
            self.calls[index][1] += text
            delta.arguments.append((index, text))


def _could_start(text: str) -> bool:
    """``text`` may still grow into a call header."""
    probe = '<tool_call>{"name": "'
    if len(text) <= len(probe):
        return probe.startswith(text)
    if not text.startswith(probe):
        return False
    rest = text[len(probe):]
    name = re.match(r"[A-Za-z0-9_-]*", rest)
    return '", "arguments": '.startswith(rest[name.end() if name else 0:])


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def parse_tool_calls(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text and the ``(name, arguments)`` calls of a whole answer."""
    parser = ToolCallParser()
    first, last = parser.feed(text), parser.finish()
    return first.text + last.text, [(name, arguments) for name, arguments in parser.calls]
