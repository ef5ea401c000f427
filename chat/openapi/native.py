"""The native, Workers AI-shaped API: ``/ai/run/{model}`` and ``/ai/models/search``, each also under
``/client/v4/accounts/{account_id}`` (the URLs Cloudflare's SDKs call)."""
from __future__ import annotations

from .parts import (
    MAX_TOKENS,
    MESSAGE,
    MODEL_PARAM,
    PUBLIC,
    TOOL_MESSAGES,
    USAGE,
    Schema,
    envelope,
    errors,
    json_body,
    nullable,
    obj,
    ok,
    operation,
    param,
    ref,
    response_format,
    sampling,
    tools_fields,
)

SSE = ('one event per text piece, `data: {"response": "<piece>"}`; when the answer calls tools, one '
       '`data: {"response": "", "tool_calls": [...]}` with the calls; then `data: {"response": "", "usage": {...}}`, '
       'then `data: [DONE]`. An error after the start comes as `event: error` with `data: {"errors": [...]}` and '
       "the stream ends without `[DONE]`.")
ACCOUNT_PARAM = param("account_id", "path", {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                      "Any account id; accepted so that Cloudflare's clients work unchanged.")


def schemas() -> dict[str, Schema]:
    run = obj({
        "prompt": {"type": "string", "minLength": 1, "description": "Text; the chat template wraps it unless `raw`."},
        "messages": {"type": "array", "items": {"anyOf": [ref("Message"), *TOOL_MESSAGES]}, "minItems": 1},
        "raw": {"type": "boolean", "default": False,
                "description": "Send `prompt` as it is, without the chat template (with `prompt` only)."},
        "stream": {"type": "boolean", "default": False, "description": "Answer as Server-Sent Events."},
        "max_tokens": {**MAX_TOKENS, "default": 256},
        **sampling(0.6),
        "response_format": response_format(native=True),
        **tools_fields(native=True),
    }, description="Exactly one of `prompt` or `messages` (`tools` need `messages`). Workers AI's `lora`, "
                   "`functions` and `image` are refused with a 400.",
        oneOf=[{"required": ["prompt"]}, {"required": ["messages"]}])
    model = obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "task": obj({"name": {"const": "Text Generation"}}, ("name",)),
        "properties": {"type": "array", "items": obj({"property_id": {"type": "string"}, "value": {"type": "string"}},
                                                     ("property_id", "value")),
                       "description": "`context_length_limit` (input tokens), `sequence_length_limit` (output "
                                      "tokens) and `precision`."},
        "available": {"type": "boolean"},
        "unavailable_reason": nullable({"type": "string"}),
        "state": {"type": "string", "description": "`loaded`, `loading`, `not loaded`, `unavailable: <why>`, or a "
                                                   "remote entry's upstreams (`remote: 2/2 upstreams up`, "
                                                   "`unreachable (...)`)."},
        "default": {"type": "boolean", "description": "The catalog's default model."},
    }, ("id", "name", "description", "task", "properties", "available"))
    return {
        "Message": MESSAGE,
        "Usage": USAGE,
        "RunRequest": run,
        "RunResult": envelope(obj({
            "response": {"anyOf": [{"type": "string"}, {"type": "object"}],
                         "description": "The answer; with `response_format` JSON, the parsed object."},
            "tool_calls": {"type": "array", "items": obj({"name": {"type": "string"},
                                                          "arguments": {"anyOf": [{"type": "object"},
                                                                                  {"type": "string"}]}},
                                                         ("name", "arguments"))},
            "usage": ref("Usage")}, ("response", "usage"))),
        "CatalogModel": model,
        "ModelList": {**envelope({"type": "array", "items": ref("CatalogModel")}), "properties": {
            **envelope({"type": "array", "items": ref("CatalogModel")})["properties"],
            "result_info": obj({n: {"type": "integer", "minimum": 0}
                                for n in ("page", "per_page", "count", "total_count")},
                               ("page", "per_page", "count", "total_count")),
        }},
    }


def _account_scoped(item: Schema) -> Schema:
    """The same operation under ``/client/v4/accounts/{account_id}``."""
    (method, op), = item.items()
    return {method: {**op, "operationId": f"{op['operationId']}Account",
                     "parameters": [ACCOUNT_PARAM, *op.get("parameters", [])]}}


def paths() -> dict[str, Schema]:
    run = {"post": operation(
        "aiRun", "Native", "Run a text-generation model",
        {**ok(ref("RunResult"), sse=SSE), **errors(400, 401, 403, 413, 429, 500, 503)},
        description="Errors before the stream starts carry their HTTP status.",
        parameters=[MODEL_PARAM], requestBody=json_body(ref("RunRequest")),
    )}
    search = {"get": operation(
        "aiModelsSearch", "Native", "List the model catalog", ok(ref("ModelList")),
        description="Every enabled entry, with its limits and whether it can serve now, in pages "
                    "(past the last page the result is empty).", security=PUBLIC,
        parameters=[
            param("page", "query", {"type": "integer", "minimum": 1, "default": 1}, "Page, from 1.", required=False),
            param("per_page", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                  "Entries per page (larger values count as 100).", required=False),
        ],
    ) | {"responses": {**ok(ref("ModelList")), **errors(400)}}}
    return {
        "/ai/run/{model}": run,
        "/client/v4/accounts/{account_id}/ai/run/{model}": _account_scoped(run),
        "/ai/models/search": search,
        "/client/v4/accounts/{account_id}/ai/models/search": _account_scoped(search),
    }
