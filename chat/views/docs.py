"""The API's OpenAPI document (``/openapi.json``) and its reference page (``/docs``).

The page is rendered on the server from the same document: no script, no CDN, nothing
inline, so it works under the strict Content-Security-Policy.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from ..openapi import build_document

METHODS = ("get", "post", "put", "patch", "delete")
CONSTRAINTS = (  # keyword, label
    ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("minLength", "min length"),
    ("maxLength", "max length"), ("minItems", "min items"), ("maxItems", "max items"),
    ("maxProperties", "max properties"), ("pattern", "pattern"), ("format", "format"), ("default", "default"),
)
COMBINATORS = {"oneOf": "Exactly one of", "anyOf": "Any of", "allOf": "All of"}
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(build_document(), json_dumps_params={"ensure_ascii": False})


def reference(request: HttpRequest) -> HttpResponse:
    document = build_document()
    return render(request, "docs/reference.html", {
        "info": document["info"],
        "description": prose(document["info"]["description"]),
        "groups": operation_groups(document),
        "schemas": [schema_view(name, s) for name, s in document["components"]["schemas"].items()],
        "security_schemes": [{"name": n, "type": _scheme(s), "description": prose(s.get("description", ""))}
                             for n, s in document["components"]["securitySchemes"].items()],
    })


# view models --------------------------------------------------------------------------------
@dataclass
class Row:
    """One documented field: a parameter, a property, a response."""

    name: str
    type: SafeString
    description: SafeString
    required: bool = False
    where: str = ""
    constraints: list[str] = field(default_factory=list)


@dataclass
class Operation:
    id: str
    method: str
    path: str
    summary: str
    description: SafeString
    security: str
    parameters: list[Row]
    body: Row | None
    responses: list[Row]


@dataclass
class Group:
    name: str
    description: str
    operations: list[Operation]


def operation_groups(document: dict[str, Any]) -> list[Group]:
    """Operations by tag, in the document's order."""
    groups = {t["name"]: Group(t["name"], t.get("description", ""), []) for t in document.get("tags", [])}
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = op.get("tags", ["Other"])[0]
                groups.setdefault(tag, Group(tag, "", [])).operations.append(
                    _operation(path, method, op, shared, document.get("security", [])))
    return [g for g in groups.values() if g.operations]


def _operation(path: str, method: str, op: dict[str, Any], shared: list[dict[str, Any]],
               default_security: list[dict[str, Any]]) -> Operation:
    parameters = [Row(p["name"], type_html(p["schema"]), prose(p.get("description", "")), p.get("required", False),
                      p["in"], constraints(p["schema"])) for p in [*shared, *op.get("parameters", [])]]
    body = None
    if "requestBody" in op:
        (media, content), = op["requestBody"]["content"].items()
        body = Row(media, type_html(content["schema"]), prose(op["requestBody"].get("description", "")),
                   op["requestBody"].get("required", False))
    responses = [Row(status, mark_safe(", ".join(format_html("<code>{}</code> {}", media, type_html(c["schema"]))
                                                 for media, c in r.get("content", {}).items())),
                     prose(r["description"])) for status, r in op["responses"].items()]
    return Operation(op["operationId"], method.upper(), path, op.get("summary", ""), prose(op.get("description", "")),
                     _security(op.get("security", default_security)), parameters, body, responses)


def _security(requirements: list[dict[str, Any]]) -> str:
    if not requirements or requirements == [{}]:
        return "none"
    return " or ".join(" + ".join(r) if r else "none" for r in requirements)


def _scheme(scheme: dict[str, Any]) -> str:
    if scheme["type"] == "http":
        return f"HTTP {scheme['scheme']}"
    return f"{scheme['type']} in {scheme['in']}: {scheme['name']}"


def schema_view(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A component schema as a table of its properties (with what its combinators add)."""
    required = set(schema.get("required", []))
    rows = [Row(prop, type_html(s), prose(s.get("description", "")), prop in required, constraints=constraints(s))
            for prop, s in schema.get("properties", {}).items()]
    notes = [format_html("{}: {}", label, type_html({kw: schema[kw]})) for kw, label in COMBINATORS.items()
             if kw in schema]
    if "properties" not in schema:
        notes.insert(0, type_html(schema))
    return {"name": name, "description": prose(schema.get("description", "")), "rows": rows, "notes": notes}


# rendering ----------------------------------------------------------------------------------
def type_html(schema: dict[str, Any]) -> SafeString:
    """A schema's type in a few words, with links to the components it names."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return format_html('<a href="#schema-{}">{}</a>', name, name)
    if "const" in schema:
        return format_html("<code>{}</code>", json.dumps(schema["const"]))
    if "enum" in schema:
        return mark_safe(" | ".join(format_html("<code>{}</code>", json.dumps(v)) for v in schema["enum"]))
    for keyword, joiner in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if keyword in schema:
            parts = [type_html(s) if s.get("type") or "$ref" in s or "const" in s or "enum" in s
                     else _required_of(s) for s in schema[keyword]]
            return mark_safe(joiner.join(parts))
    kind = schema.get("type", "any")
    if kind == "array" and "items" in schema:
        return format_html("array of {}", type_html(schema["items"]))
    if kind == "object" and schema.get("properties"):
        return format_html("object {{{}}}", mark_safe(", ".join(
            format_html("{}: {}", name, type_html(s)) for name, s in schema["properties"].items())))
    return mark_safe(escape(kind))


def _required_of(schema: dict[str, Any]) -> SafeString:
    return format_html("with {}", ", ".join(schema.get("required", [])) or "anything")


def constraints(schema: dict[str, Any]) -> list[str]:
    return [f"{label} {json.dumps(schema[kw]) if kw in ('default', 'pattern') else schema[kw]}"
            for kw, label in CONSTRAINTS if kw in schema]


def prose(text: str) -> SafeString:
    """The document's light Markdown (paragraphs, ``- `` lists, `code`, **bold**) as HTML."""
    html = []
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if all(line.startswith("- ") for line in lines):
            html.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            html.append(f"<p>{_inline(' '.join(lines))}</p>")
    return mark_safe("".join(html))


def _inline(text: str) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", escape(text)))
