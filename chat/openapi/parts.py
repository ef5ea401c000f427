"""Building blocks of the OpenAPI document: schema helpers, the sampling fields every
generating endpoint shares, and the error responses of both envelopes."""
from __future__ import annotations

from typing import Any

from inference import DEFAULT_MODEL

from .. import errors as codes
from ..messages import ROLES
from ..validation import MAX_STOP_SEQUENCES

Schema = dict[str, Any]

# Who may call: an API token, or the chat page's session with its CSRF token.
AUTHENTICATED: list[Schema] = [{"bearer": []}, {"session": [], "csrf": []}]
PUBLIC: list[Schema] = [{}]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def number(low: float, high: float, default: float, what: str, exclusive_low: bool = False) -> Schema:
    bound = {"exclusiveMinimum": low} if exclusive_low else {"minimum": low}
    return {"type": "number", **bound, "maximum": high, "default": default, "description": what}


def envelope(result: Schema) -> Schema:
    """The native success envelope around ``result``."""
    return obj({"result": result, "success": {"const": True}, "errors": {"type": "array", "maxItems": 0},
                "messages": {"type": "array"}}, ("result", "success", "errors", "messages"))


def json_body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def param(name: str, where: str, schema: Schema, description: str, required: bool = True) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


def operation(operation_id: str, tag: str, summary: str, responses: Schema, **extra: Any) -> Schema:
    return {"operationId": operation_id, "tags": [tag], "summary": summary, **extra, "responses": responses}


# sampling fields: /ai/run, /v1/*, a conversation turn ---------------------------------------------
MAX_TOKENS: Schema = {"type": "integer", "minimum": 1,
                      "description": "Output budget, at most the model's `max_output_tokens` (its "
                                     "`sequence_length_limit`)."}


def sampling(default_temperature: float) -> dict[str, Schema]:
    return {
        "temperature": number(0, 5, default_temperature, "0 is greedy decoding."),
        "top_p": number(0, 1, 1, "Nucleus sampling: keep the most likely tokens up to this mass.", True),
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Keep the k most likely tokens."},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1,
                 "description": "Same seed, input and settings give the same output."},
        "repetition_penalty": number(0, 2, 1, "Divides the logits of tokens already seen (0 or 1: none)."),
        "frequency_penalty": number(-2, 2, 0, "Lowers a token's logit once per earlier occurrence."),
        "presence_penalty": number(-2, 2, 0, "Lowers the logit of every token already present."),
        "stop": {"description": f"Up to {MAX_STOP_SEQUENCES} strings; generation ends before the first of them, "
                         "which is not part of the answer.",
                 "oneOf": [{"type": "string", "minLength": 1},
                           {"type": "array", "items": {"type": "string", "minLength": 1},
                            "maxItems": MAX_STOP_SEQUENCES}]},
        "stop_token_ids": {"type": "array", "maxItems": 64, "items": {"type": "integer", "minimum": 0,
                                                                       "maximum": 2**31 - 1},
                           "description": "Token ids that end the answer like end-of-sequence (vLLM's field)."},
        "min_tokens": {"type": "integer", "minimum": 0, "default": 0,
                       "description": "At least this many tokens before the answer may end: end-of-sequence and "
                                      "`stop_token_ids` are masked and `stop` strings ignored until then (vLLM's "
                                      "field; at most `max_tokens`). A constrained answer still ends when its "
                                      "grammar is complete."},
    }


# structured output and tools: /ai/run and /v1/chat/completions -------------------------------------
JSON_SCHEMA: Schema = {"type": "object", "description": "A JSON Schema (draft 2020-12 subset that llguidance "
                                                         "compiles; one it cannot is a 400 with the reason)."}
FUNCTION = obj({
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "description": {"type": "string"},
    "parameters": {**JSON_SCHEMA, "description": "The arguments' JSON Schema; calls are generated to match it."},
}, ("name",))
TOOL_CALL_RULES = ("Calls are generated in the Hermes format (`<tool_call>{\"name\": ..., \"arguments\": ...}"
                   "</tool_call>`, tools listed in the system prompt) under a grammar: names are listed "
                   "functions, arguments match their `parameters`. Nothing is executed by the server.")


def tools_fields(native: bool) -> dict[str, Schema]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``; Workers AI also takes flat functions."""
    openai_tool = obj({"type": {"const": "function"}, "function": FUNCTION}, ("type", "function"))
    return {
        "tools": {"type": "array", "maxItems": 64, "description": TOOL_CALL_RULES,
                  "items": {"anyOf": [openai_tool, FUNCTION]} if native else openai_tool},
        "tool_choice": {"description": "`auto` (default with tools: text or calls), `none`, `required`, or a "
                                       "named function.",
                        "anyOf": [{"enum": ["none", "auto", "required"]},
                                  obj({"type": {"const": "function"},
                                       "function": obj({"name": {"type": "string"}}, ("name",))},
                                      ("type", "function"))]},
        "parallel_tool_calls": {"type": "boolean", "default": True,
                                "description": "Allow more than one call in an answer."},
    }


def response_format(native: bool) -> Schema:
    """``text``, ``json_object`` or ``json_schema``: the answer is generated under the grammar."""
    wrapped = obj({"name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
                   "schema": JSON_SCHEMA, "strict": {"type": "boolean"}}, ("name",))
    schema_shape = {"anyOf": [wrapped, JSON_SCHEMA]} if native else wrapped
    return {"description": "`json_object`: any JSON object; `json_schema`: JSON valid against the schema"
                           + (" (given as it is, or OpenAI's `{name, schema}`)" if native else "")
                           + ". Guaranteed by constrained decoding unless the answer runs out of `max_tokens`.",
            "oneOf": [obj({"type": {"const": "text"}}, ("type",)),
                      obj({"type": {"const": "json_object"}}, ("type",)),
                      obj({"type": {"const": "json_schema"}, "json_schema": schema_shape},
                          ("type", "json_schema"))]}


MESSAGE = obj({"role": {"enum": list(ROLES)}, "content": {"type": "string"}}, ("role", "content"))
CALL = obj({"id": {"type": "string"}, "type": {"const": "function"},
            "function": obj({"name": {"type": "string"}, "arguments": {"type": "string"}}, ("name", "arguments"))},
           ("id", "type", "function"))
TOOL_MESSAGES: list[Schema] = [
    obj({"role": {"const": "tool"}, "content": {"type": "string"}, "tool_call_id": {"type": "string"}},
        ("role", "content"), description="A tool's result."),
    obj({"role": {"const": "assistant"}, "content": nullable({"type": "string"}),
         "tool_calls": {"type": "array", "items": CALL, "minItems": 1}}, ("role", "tool_calls"),
        description="An earlier answer that called tools."),
]
USAGE = obj({f: {"type": "integer", "minimum": 0} for f in ("prompt_tokens", "completion_tokens", "total_tokens")},
            ("prompt_tokens", "completion_tokens", "total_tokens"))
MODEL_PARAM = param("model", "path", {"type": "string", "minLength": 1, "examples": [DEFAULT_MODEL]},
                    f"A catalog name such as `{DEFAULT_MODEL}`; its `@` and `/` are sent as they are.")

# responses ----------------------------------------------------------------------------------------
NATIVE_ERRORS = {
    400: f"Invalid body or parameter (code {codes.INVALID_INPUT}, naming the field and the rule), or unknown model "
         f"({codes.NO_SUCH_MODEL}).",
    401: f"Missing or bad token ({codes.AUTHENTICATION}).",
    403: f"A session request without its CSRF token ({codes.AUTHENTICATION}).",
    404: "No such conversation or message of the caller's.",
    409: "An answer is still streaming in this conversation; stop it first.",
    413: f"Input longer than the model's context window ({codes.CONTEXT_WINDOW}), "
         f"or body too large ({codes.TOO_LARGE}).",
    429: f"Rate limit, or the model's queue is full ({codes.CAPACITY}); see `Retry-After`.",
    500: "The generation failed.",
    503: f"The model is listed but cannot serve ({codes.MODEL_UNAVAILABLE}); the message says why.",
}
OPENAI_ERRORS = {
    400: "Invalid request, unsupported parameter, or input longer than the context window "
         "(`context_length_exceeded`); `param` names the field.",
    401: "`invalid_api_key`.",
    403: "A session request without its CSRF token.",
    404: "`model_not_found`.",
    413: "`request_too_large`.",
    429: "`rate_limit_exceeded` or `server_overloaded`; see `Retry-After`.",
    500: "The generation failed.",
    503: "`model_unavailable`, not worth retrying soon.",
}


def errors(*statuses: int, openai: bool = False) -> dict[str, Schema]:
    """Error responses in the native (``Error``) or OpenAI (``OpenAIError``) envelope."""
    table, schema = (OPENAI_ERRORS, "OpenAIError") if openai else (NATIVE_ERRORS, "Error")
    return {str(s): {"description": table[s], "content": {"application/json": {"schema": ref(schema)}}}
            for s in statuses}


def ok(schema: Schema, description: str = "OK", status: int = 200, sse: str | None = None) -> dict[str, Schema]:
    """A JSON success response; with ``sse``, also ``text/event-stream`` framed as ``sse`` says."""
    content: Schema = {"application/json": {"schema": schema}}
    if sse:
        content["text/event-stream"] = {"schema": ref("ServerSentEvent")}
        description = f"{description}. Streamed: {sse}"
    return {str(status): {"description": description, "content": content}}


def common_schemas() -> dict[str, Schema]:
    """The error envelopes, and one event of a stream."""
    return {
        "ServerSentEvent": obj({
            "data": {"type": "string", "description": "JSON, or `[DONE]` to end the stream."},
            "event": {"type": "string", "description": "`message`, or `error` for a native error event."},
            "id": {"type": "string", "description": "Conversation streams: characters of the answer so far."},
        }, ("data",), description="One event of a `text/event-stream` response, as an EventSource reads it."),
        "Error": obj({
            "result": {"type": "null"}, "success": {"const": False},
            "errors": {"type": "array", "minItems": 1, "items": obj(
                {"code": {"type": "integer"}, "message": {"type": "string"}}, ("code", "message"))},
            "messages": {"type": "array"},
        }, ("result", "success", "errors", "messages"), description="Every native and conversation error."),
        "OpenAIError": obj({"error": obj({
            "message": {"type": "string"}, "type": {"type": "string"},
            "code": nullable({"type": "string"}), "param": nullable({"type": "string"}),
        }, ("message", "type", "code", "param"))}, ("error",), description="Every `/v1` error."),
    }
