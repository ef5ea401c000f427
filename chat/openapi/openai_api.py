"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Fields OpenAI defines that this server cannot honour are documented with the only value it
accepts (``n`` = 1, no ``logit_bias``, no ``echo``...); anything else is a 400 ``unsupported_parameter``.
"""
from __future__ import annotations

from ..messages import ROLES
from ..openai_compat import COMPLETIONS_DEFAULT_MAX_TOKENS, OPENAI_DEFAULT_TEMPERATURE
from .parts import (
    CALL,
    MAX_TOKENS,
    MODEL_PARAM,
    TOOL_MESSAGES,
    Schema,
    errors,
    json_body,
    nullable,
    obj,
    ok,
    operation,
    ref,
    response_format,
    sampling,
    tools_fields,
)

ERRORS = errors(400, 401, 403, 404, 413, 429, 500, 503, openai=True)
SSE_CHAT = ("`chat.completion.chunk` events: one opening the assistant's turn, one per text piece "
            "(`choices[0].delta.content`) or piece of a tool call (`choices[0].delta.tool_calls`: the first "
            "of a call carries its `index`, `id` and `function.name`, the next ones pieces of "
            "`function.arguments`), one with `finish_reason` (`tool_calls` when the answer calls tools), "
            "the usage chunk when `stream_options.include_usage`, then `data: [DONE]`. An error after the "
            'start comes as `data: {"error": {...}}` and no `[DONE]`.')
SSE_TEXT = ("`text_completion` events, one per text piece (`choices[0].text`), one with `finish_reason`, "
            "the usage chunk when `stream_options.include_usage`, then `data: [DONE]`.")


def _common(default_max_tokens: str) -> dict[str, Schema]:
    """Fields both completion endpoints take."""
    return {
        "model": {"type": "string", "minLength": 1, "description": "A catalog name (see `GET /v1/models`)."},
        "stream": {"type": "boolean", "default": False},
        "stream_options": obj({"include_usage": {"type": "boolean", "default": False}},
                              description="Only with `\"stream\": true`."),
        "max_tokens": {**MAX_TOKENS, "description": f"{MAX_TOKENS['description']} Default: {default_max_tokens}."},
        **sampling(OPENAI_DEFAULT_TEMPERATURE),
        "n": {"const": 1, "description": "One choice per request."},
        "logit_bias": {"type": "object", "maxProperties": 0},
    }


def schemas() -> dict[str, Schema]:
    text_part = obj({"type": {"const": "text"}, "text": {"type": "string"}}, ("type", "text"))
    message = obj({
        "role": {"enum": [*ROLES, "developer"], "description": "`developer` counts as `system`."},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": text_part}],
                    "description": "A string, or text parts (joined)."},
    }, ("role", "content"))
    chat = obj({
        **_common("the model's whole `max_output_tokens`"),
        "messages": {"type": "array", "items": {"anyOf": [ref("ChatMessage"), *TOOL_MESSAGES]}, "minItems": 1},
        "max_completion_tokens": {**MAX_TOKENS, "description": "The same as `max_tokens`; set only one."},
        "response_format": response_format(native=False),
        **tools_fields(native=False),
        "logprobs": {"type": "boolean", "default": False,
                     "description": "Each answer token's log-probability (`choices[].logprobs.content`)."},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20,
                         "description": "With `logprobs`: the most likely alternatives at each token."},
        "modalities": {"const": ["text"]},
        "store": {"const": False, "description": "Nothing is stored for OpenAI's evals or distillation."},
        "user": {"type": "string", "description": "Accepted; not used."},
        "metadata": {"type": "object", "description": "Accepted; not used."},
    }, ("model", "messages"), description="`functions`/`function_call` (deprecated by OpenAI) are refused: use "
                                          "`tools`. `audio`, `prediction`, `web_search_options` and "
                                          "`reasoning_effort` are refused with a 400.")
    text = obj({
        **_common(str(COMPLETIONS_DEFAULT_MAX_TOKENS)),
        "prompt": {"description": "Sent as it is, without chat template.",
                   "oneOf": [{"type": "string", "minLength": 1},
                             {"type": "array", "items": {"type": "string", "minLength": 1},
                              "minItems": 1, "maxItems": 1}]},
        "echo": {"const": False}, "suffix": {"const": ""}, "best_of": {"const": 1},
        "logprobs": {"type": "integer", "minimum": 0, "maximum": 5,
                     "description": "Each token's log-probability and this many likeliest alternatives."},
    }, ("model", "prompt"))
    finish = {"enum": ["stop", "length"]}
    logprob = obj({"token": {"type": "string"}, "logprob": {"type": "number"},
                   "bytes": {"type": "array", "items": {"type": "integer"}}}, ("token", "logprob"))
    chat_logprobs = nullable(obj({"content": {"type": "array", "items": {
        **logprob, "properties": {**logprob["properties"], "top_logprobs": {"type": "array", "items": logprob}}}}}))
    text_logprobs = nullable(obj({"tokens": {"type": "array", "items": {"type": "string"}},
                                  "token_logprobs": {"type": "array", "items": {"type": "number"}},
                                  "top_logprobs": {"type": "array", "items": {"type": "object"}},
                                  "text_offset": {"type": "array", "items": {"type": "integer"}}}))
    head = {"id": {"type": "string"}, "created": {"type": "integer"}, "model": {"type": "string"}}
    assistant = obj({"role": {"const": "assistant"}, "content": nullable({"type": "string"}),
                     "refusal": {"type": "null"}, "tool_calls": {"type": "array", "items": CALL}},
                    ("role", "content"))
    return {
        "ChatMessage": message,
        "ChatCompletionRequest": chat,
        "CompletionRequest": text,
        "ChatCompletion": obj({**head, "object": {"const": "chat.completion"}, "usage": ref("Usage"), "choices": {
            "type": "array", "items": obj({"index": {"type": "integer"}, "message": assistant,
                                           "logprobs": chat_logprobs,
                                           "finish_reason": {"enum": ["stop", "length", "tool_calls"]}},
                                          ("index", "message", "finish_reason"))}},
            ("id", "object", "created", "model", "choices", "usage")),
        "TextCompletion": obj({**head, "object": {"const": "text_completion"}, "usage": ref("Usage"), "choices": {
            "type": "array", "items": obj({"index": {"type": "integer"}, "text": {"type": "string"},
                                           "logprobs": text_logprobs, "finish_reason": finish},
                                          ("index", "text", "finish_reason"))}},
            ("id", "object", "created", "model", "choices", "usage")),
        "TokenizeRequest": obj({
            "model": {"type": "string", "minLength": 1},
            "prompt": {"type": "string", "description": "Tokenized as it is (no chat template)."},
            "messages": {"type": "array", "items": {"anyOf": [ref("ChatMessage"), *TOOL_MESSAGES]}, "minItems": 1,
                         "description": "Tokenized through the chat template, as a chat completion would be."},
            **tools_fields(native=False),
        }, ("model",), description="Exactly one of `prompt` or `messages`."),
        "Tokens": obj({"count": {"type": "integer", "minimum": 0}, "max_model_len": {"type": "integer"},
                       "tokens": {"type": "array", "items": {"type": "integer"}}},
                      ("count", "max_model_len", "tokens")),
        "DetokenizeRequest": obj({"model": {"type": "string", "minLength": 1},
                                  "tokens": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                                        "maximum": 2**31 - 1},
                                             "maxItems": 100_000}}, ("model", "tokens")),
        "Detokenized": obj({"prompt": {"type": "string"}}, ("prompt",)),
        "Model": obj({"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                      "owned_by": {"type": "string"}}, ("id", "object", "created", "owned_by")),
        "ModelPage": obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}},
                         ("object", "data")),
    }


def paths() -> dict[str, Schema]:
    return {
        "/v1/models": {"get": operation(
            "listModels", "OpenAI", "List models", {**ok(ref("ModelPage")), **errors(401, 403, 429, openai=True)},
            description="Every enabled catalog entry, available now or not.")},
        "/v1/models/{model}": {"get": operation(
            "retrieveModel", "OpenAI", "Retrieve a model",
            {**ok(ref("Model")), **errors(401, 403, 404, 429, openai=True)}, parameters=[MODEL_PARAM])},
        "/v1/chat/completions": {"post": operation(
            "createChatCompletion", "OpenAI", "Chat completion", {**ok(ref("ChatCompletion"), sse=SSE_CHAT), **ERRORS},
            requestBody=json_body(ref("ChatCompletionRequest")))},
        "/v1/completions": {"post": operation(
            "createCompletion", "OpenAI", "Text completion (raw prompt)",
            {**ok(ref("TextCompletion"), sse=SSE_TEXT), **ERRORS}, requestBody=json_body(ref("CompletionRequest")))},
        "/tokenize": {"post": operation(
            "tokenize", "OpenAI", "Token ids of a prompt or conversation (vLLM's helper)",
            {**ok(ref("Tokens")), **ERRORS}, requestBody=json_body(ref("TokenizeRequest")))},
        "/detokenize": {"post": operation(
            "detokenize", "OpenAI", "Text of token ids (vLLM's helper)",
            {**ok(ref("Detokenized")), **ERRORS}, requestBody=json_body(ref("DetokenizeRequest")))},
    }

