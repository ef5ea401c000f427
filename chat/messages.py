"""Conversations and the answer's shape in request bodies, for both APIs: ``messages``
(with assistant ``tool_calls`` and ``tool`` results), ``response_format``, ``tools``,
``tool_choice``, ``parallel_tool_calls``. They become plain messages for the chat template
and a ``Guide`` on the sampling settings (``inference.tools``, ``inference.guided``);
errors are 400s naming the field."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from inference import Guide, Tool, ToolCall, render_messages, tool_guide

from .errors import invalid

ROLES = ("system", "user", "assistant")
MAX_TOOLS = 64
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class Structure:
    """What a body asks of the answer's shape, validated."""

    messages: list[dict[str, str]] | None  # rendered for the chat template (tools included)
    guide: Guide | None = None
    guide_field: str = "response_format"  # blamed when the grammar cannot compile
    tools: list[Tool] = field(default_factory=list)
    calls_expected: bool = False  # read tool calls out of the answer
    json_response: bool = False  # the answer is JSON (response_format)


def parse_messages(value: Any, field: str = "messages") -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise invalid(f"'{field}' must be a non-empty list of {{role, content}} objects")
    return [parse_message(m, f"{field}[{i}]") for i, m in enumerate(value)]


def parse_message(m: Any, where: str) -> dict[str, str]:
    if not isinstance(m, dict):
        raise invalid(f"'{where}' must be an object with 'role' and 'content'")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise invalid(f"'{where}.role' must be one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise invalid(f"'{where}.content' must be a string")
    return {"role": role, "content": content}


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def parse_response_format(value: Any, native: bool = False) -> Guide | None:
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema",
    "json_schema": {...}}``: OpenAI nests the schema as ``json_schema.schema`` (with ``name``
    and ``strict``); Workers AI also takes the schema itself as ``json_schema``."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid("'response_format' must be an object whose 'type' is 'text', 'json_object' or 'json_schema'")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return Guide.json_object()
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid("'response_format.json_schema' must be an object")
    if "schema" in spec or not native:
        schema = spec.get("schema", {})
        name = spec.get("name")
        if not native and (not isinstance(name, str) or not name):
            raise invalid("'response_format.json_schema.name' must be a non-empty string")
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise invalid("'response_format.json_schema.strict' must be a boolean")
    else:
        schema = spec
    if not isinstance(schema, dict):
        raise invalid("'response_format.json_schema.schema' must be a JSON Schema object")
    return Guide.json_schema(schema)


def parse_tools(value: Any, native: bool = True) -> list[Tool]:
    """OpenAI's ``[{"type": "function", "function": {name, description, parameters}}]``, or
    Workers AI's flat ``[{name, description, parameters}]``."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise invalid(f"'tools' must be a list of at most {MAX_TOOLS} functions")
    tools: list[Tool] = []
    for i, item in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"'{where}' must be an object")
        if "function" in item or "type" in item or not native:
            if item.get("type") != "function" or not isinstance(item.get("function"), dict):
                raise invalid(f"'{where}' must be {{\"type\": \"function\", \"function\": {{...}}}}")
            item, where = item["function"], f"{where}.function"
        name, description = item.get("name"), item.get("description", "")
        parameters = item.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not set(name) <= NAME_CHARS:
            raise invalid(f"'{where}.name' must be 1-64 letters, digits, '_' or '-'")
        if not isinstance(description, str):
            raise invalid(f"'{where}.description' must be a string")
        if not isinstance(parameters, dict):
            raise invalid(f"'{where}.parameters' must be a JSON Schema object")
        if any(t.name == name for t in tools):
            raise invalid(f"'{where}.name' repeats the function name {name!r}")
        tools.append(Tool(name, description, parameters))
    return tools


def parse_tool_choice(value: Any, tools: list[Tool]) -> str:
    """``none``, ``auto`` (the default with tools), ``required``, or a function's name."""
    if value is None:
        return "auto" if tools else "none"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise invalid("'tool_choice' must be 'none', 'auto', 'required' or a named function")
        choice = value
    elif isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        choice = value["function"].get("name")
        if not any(t.name == choice for t in tools):
            raise invalid("'tool_choice.function.name' must name one of the 'tools'")
    else:
        raise invalid("'tool_choice' must be 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if choice != "none" and not tools:
        raise invalid("'tool_choice' needs 'tools'")
    return str(choice)


def _tool_calls(value: Any, where: str) -> list[ToolCall]:
    if not isinstance(value, list) or not value:
        raise invalid(f"'{where}' must be a non-empty list of tool calls")
    calls = []
    for i, call in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise invalid(f"'{at}' must be an object")
        function = call.get("function", call)  # OpenAI nests it; Workers AI does not
        if not isinstance(function, dict):
            raise invalid(f"'{at}.function' must be an object")
        name, arguments = function.get("name"), function.get("arguments", {})
        if not isinstance(name, str) or not name:
            raise invalid(f"'{at}.function.name' must be a non-empty string")
        if isinstance(arguments, str):
            try:
                json.loads(arguments)
            except ValueError:
                raise invalid(f"'{at}.function.arguments' must be JSON text") from None
        elif isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        else:
            raise invalid(f"'{at}.function.arguments' must be a JSON string or an object")
        call_id = call.get("id")
        calls.append(ToolCall(call_id if isinstance(call_id, str) else new_call_id(), name, arguments))
    return calls


def parse_conversation(value: Any, tools: list[Tool], choice: str) -> list[dict[str, str]]:
    """Messages that may hold assistant ``tool_calls`` and ``tool`` results, rendered as
    plain messages (with the tools' system prompt unless ``tool_choice`` is ``none``)."""
    if not isinstance(value, list) or not value:
        return parse_messages(value)  # its error message
    rich: list[dict[str, Any]] = []
    for i, m in enumerate(value):
        if isinstance(m, dict) and m.get("role") == "tool":
            content = m.get("content")
            if not isinstance(content, str):
                raise invalid(f"'messages[{i}].content' must be a string (the tool's result)")
            rich.append({"role": "tool", "content": content})
        elif isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls") is not None:
            content = m.get("content")
            if content is not None and not isinstance(content, str):
                raise invalid(f"'messages[{i}].content' must be a string or null")
            rich.append({"role": "assistant", "content": content or "",
                         "tool_calls": _tool_calls(m["tool_calls"], f"messages[{i}].tool_calls")})
        else:
            rich.append(parse_message(m, f"messages[{i}]"))
    return render_messages(rich, tools if choice != "none" else [])


def parse_structure(data: dict[str, Any], native: bool, messages_field: str = "messages") -> Structure:
    """The answer's shape requested by ``data``; ``messages`` None when the body has none."""
    guide = parse_response_format(data.get("response_format"), native)
    tools = parse_tools(data.get("tools"), native)
    choice = parse_tool_choice(data.get("tool_choice"), tools)
    parallel = data.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise invalid("'parallel_tool_calls' must be a boolean")
    raw = data.get(messages_field)
    messages = parse_conversation(raw, tools, choice) if raw is not None else None
    if tools and messages is None:
        raise invalid("'tools' need 'messages'")
    calls = tool_guide(tools, choice, parallel)
    if calls is not None:
        if guide is not None:
            raise invalid("'response_format' cannot be combined with 'tools' unless 'tool_choice' is 'none'")
        return Structure(messages, calls, "tools", tools, calls_expected=True)
    return Structure(messages, guide, json_response=guide is not None)
