"""The chat page's conversations (``/api/conversations...``), in the native envelope.

A turn is two requests: ``POST .../messages`` saves the question and a pending answer and
returns its ``stream_url``; ``GET`` that URL streams the answer (resumable with ``Last-Event-ID``).
"""
from __future__ import annotations

from django.conf import settings

from .parts import (
    MAX_TOKENS,
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
)

SSE = ('`id: <characters so far>` and `data: {"response": "<piece>"}` per piece, then `data: {"response": "", '
       '"usage", "state", "finish_reason", "time_to_first_token_ms", "tokens_per_second"}`, then `data: [DONE]`; '
       "a failed answer ends with `event: error` instead.")
TEXT = {"type": "string"}
CONVERSATION_ID = param("conversation_id", "path", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        "A conversation of the caller's.")
MESSAGE_ID = param("message_id", "path", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                   "An assistant message of that conversation.")


def _text(max_length: int, description: str) -> Schema:
    return {"type": "string", "maxLength": max_length, "description": description}


def schemas() -> dict[str, Schema]:
    when = {"type": "string", "format": "date-time"}
    conversation = obj({
        "id": {"type": "integer"}, "title": TEXT, "model": TEXT, "system_prompt": TEXT,
        "current_leaf_id": nullable({"type": "integer", "description": "The last message of the branch shown."}),
        "created_at": when, "updated_at": when,
        "match": {"type": "string", "description": "Search results: the words around the first match in a message."},
    }, ("id", "title", "model", "system_prompt", "created_at", "updated_at"))
    ids = {"type": "array", "items": {"type": "integer"}}
    count = nullable({"type": "integer", "minimum": 0})
    message = obj({
        "id": {"type": "integer"},
        "parent_id": nullable({"type": "integer", "description": "The message this one follows."}),
        "sibling_ids": {**ids, "description": "This message and its alternatives (same parent), oldest first."},
        "role": {"enum": ["user", "assistant"]}, "content": TEXT,
        "state": {"enum": ["streaming", "done", "stopped", "error"]}, "error": TEXT,
        "finish_reason": nullable(TEXT), "prompt_tokens": count, "completion_tokens": count,
        "time_to_first_token_ms": count, "tokens_per_second": nullable({"type": "number"}),
        "in_context": {"type": "boolean", "description": "Part of the prompt of the latest answer."},
        "created_at": when, "stream_url": nullable(TEXT),
    }, ("id", "role", "content", "state", "in_context", "created_at", "stream_url"))
    settings_fields = {
        "model": {"type": "string", "description": "A catalog name; default: the catalog's default model."},
        "system_prompt": _text(20_000, "Instructions sent before the conversation."),
        "title": _text(200, "Shown in the sidebar; default: `New chat`."),
    }
    return {
        "Conversation": conversation,
        "ConversationMessage": message,
        "ConversationSettings": obj(settings_fields),
        "MessageRequest": obj({
            "content": {**_text(100_000, "The user's message; not blank."), "minLength": 1},
            "parent_id": nullable({"type": "integer", "description": (
                "The answer this question follows (default: the branch shown). Another answer, or null for a "
                "new first question, edits the conversation into a new branch; the old one stays.")}),
            "model": settings_fields["model"],
            "system_prompt": {**settings_fields["system_prompt"], "description": "Replaces the conversation's."},
            "max_tokens": {**MAX_TOKENS, "default": settings.CHAT_DEFAULT_MAX_TOKENS},
            **sampling(0.6),
            "response_format": response_format(native=True),
        }, ("content",)),
        "RegenerateRequest": obj({
            "model": settings_fields["model"],
            "system_prompt": {**settings_fields["system_prompt"], "description": "Replaces the conversation's."},
            "max_tokens": {**MAX_TOKENS, "default": settings.CHAT_DEFAULT_MAX_TOKENS},
            **sampling(0.6),
            "response_format": response_format(native=True),
        }),
        "ContextRequest": obj({
            "content": _text(100_000, "The draft."),
            "conversation_id": {"type": "integer", "description": "Count it after this conversation's branch."},
            "parent_id": nullable({"type": "integer", "description": "After this answer instead (an edit)."}),
            "model": settings_fields["model"],
            "system_prompt": settings_fields["system_prompt"],
            "max_tokens": {**MAX_TOKENS, "default": settings.CHAT_DEFAULT_MAX_TOKENS},
        }),
        "ContextUsage": envelope(obj({
            "tokens": {"type": "integer", "description": "Prompt tokens of the next turn, by the model's tokenizer."},
            "context_length": {"type": "integer"}, "max_tokens": {"type": "integer"}, "model": TEXT,
            "fits": {"type": "boolean", "description": "False when even the draft alone does not fit."},
            "estimated": {"type": "boolean", "description": "Counted roughly (a remote model without /tokenize)."},
            "dropped_ids": {**ids, "description": "Messages of the branch that would fall out of the prompt."},
        }, ("tokens", "context_length", "max_tokens", "fits", "dropped_ids"))),
        "ConversationExport": obj({
            "id": {"type": "integer"}, "title": TEXT, "model": TEXT, "system_prompt": TEXT, "exported_at": when,
            "messages": {"type": "array", "items": obj({
                "id": {"type": "integer"}, "parent_id": nullable({"type": "integer"}),
                "role": {"enum": ["user", "assistant"]}, "content": TEXT, "state": TEXT,
                "finish_reason": nullable(TEXT), "model": nullable(TEXT), "created_at": when,
            }, ("id", "role", "content"))},
        }, ("id", "title", "messages")),
        "ConversationList": {"allOf": [
            envelope({"type": "array", "items": ref("Conversation")}),
            obj({"result_info": obj({
                "count": {"type": "integer"}, "per_page": {"type": "integer"},
                "cursor": nullable({"type": "string", "description": "Pass as `cursor` for the next page."}),
            }, ("count", "per_page", "cursor"))}, ("result_info",)),
        ]},
        "ConversationResult": envelope(ref("Conversation")),
        "ConversationDetail": envelope({"allOf": [ref("Conversation"), obj(
            {"messages": {"type": "array", "items": ref("ConversationMessage")}}, ("messages",))]}),
        "Deleted": envelope(obj({"id": {"type": "integer"}, "deleted": {"const": True}}, ("id", "deleted"))),
        "Turn": envelope(obj({
            "conversation": ref("Conversation"), "user_message": ref("ConversationMessage"),
            "assistant_message": ref("ConversationMessage"), "stream_url": TEXT,
        }, ("conversation", "user_message", "assistant_message", "stream_url"))),
        "Stopping": envelope(obj({"id": {"type": "integer"}, "stopping": {"type": "boolean"}}, ("id", "stopping"))),
    }


def paths() -> dict[str, Schema]:
    tag = "Conversations"
    detail = "/api/conversations/{conversation_id}"
    return {
        "/api/conversations": {
            "get": operation("listConversations", tag, "The caller's conversations, most recently active first",
                             {**ok(ref("ConversationList")), **errors(400, 401)}, parameters=[
                                 param("q", "query", {"type": "string", "maxLength": 200},
                                       "Only those whose title or any message contains this (any case).", False),
                                 param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                                          "default": 50}, "A page's size.", False),
                                 param("cursor", "query", {"type": "string"},
                                       "The previous page's `result_info.cursor`.", False)]),
            "post": operation("createConversation", tag, "Start a conversation",
                              {**ok(ref("ConversationResult"), "Created", 201), **errors(400, 401, 403, 413, 503)},
                              requestBody=json_body(ref("ConversationSettings"), required=False)),
        },
        detail: {
            "parameters": [CONVERSATION_ID],
            "get": operation("getConversation", tag, "A conversation with its messages",
                             {**ok(ref("ConversationDetail")), **errors(401, 404)}),
            "patch": operation("updateConversation", tag, "Change its title, system prompt or model",
                               {**ok(ref("ConversationResult")), **errors(400, 401, 403, 404, 413)},
                               requestBody=json_body(ref("ConversationSettings"))),
            "delete": operation("deleteConversation", tag, "Delete it (stopping any answer)",
                                {**ok(ref("Deleted")), **errors(401, 403, 404)}),
        },
        f"{detail}/messages": {"post": operation(
            "postMessage", tag, "Send a message; the answer starts generating",
            {**ok(ref("Turn"), "Created: both messages and the answer's `stream_url`", 201),
             **errors(400, 401, 403, 404, 409, 413, 429, 503)},
            parameters=[CONVERSATION_ID], requestBody=json_body(ref("MessageRequest")),
        )},
        f"{detail}/messages/{{message_id}}/stream": {"get": operation(
            "streamMessage", tag, "Stream an answer (Server-Sent Events)",
            {"200": {"description": f"The answer from `Last-Event-ID` (or `offset`) on: {SSE}",
                     "content": {"text/event-stream": {"schema": ref("ServerSentEvent")}}}, **errors(401, 404)},
            parameters=[CONVERSATION_ID, MESSAGE_ID,
                        param("Last-Event-ID", "header", {"type": "string"},
                              "Resume after this many characters (EventSource sends the last event's `id` when it "
                              "reconnects); anything but a number starts from the beginning.", False),
                        param("offset", "query", {"type": "integer", "minimum": 0},
                              "The same, for clients that cannot set headers.", False)],
        )},
        f"{detail}/messages/{{message_id}}/regenerate": {"post": operation(
            "regenerateMessage", tag, "Answer the same question again; the old answer stays as an alternative",
            {**ok(ref("Turn"), "Created: the question, the new answer and its `stream_url`", 201),
             **errors(400, 401, 403, 404, 409, 413, 429, 503)},
            parameters=[CONVERSATION_ID, MESSAGE_ID], requestBody=json_body(ref("RegenerateRequest"), required=False),
        )},
        f"{detail}/messages/{{message_id}}/select": {"post": operation(
            "selectMessage", tag, "Show the branch through this message (an alternative), where it was left off",
            {**ok(ref("ConversationDetail")), **errors(401, 403, 404)},
            parameters=[CONVERSATION_ID, param("message_id", "path", {"type": "integer", "minimum": 0,
                                                                    "maximum": 2**63 - 1},
                                               "A message of that conversation.")],
        )},
        f"{detail}/export": {"get": operation(
            "exportConversation", tag, "Download the branch shown as Markdown or JSON",
            {"200": {"description": "An attachment", "content": {
                "text/markdown": {"schema": {"type": "string"}},
                "application/json": {"schema": ref("ConversationExport")}}}, **errors(400, 401, 404)},
            parameters=[CONVERSATION_ID, param("format", "query", {"enum": ["markdown", "md", "json"],
                                                                   "default": "markdown"}, "The file's format.",
                                               False)],
        )},
        "/api/context": {"post": operation(
            "countContext", tag, "How much of the model's context the next turn would use",
            {**ok(ref("ContextUsage")), **errors(400, 401, 403, 404, 413, 503)},
            requestBody=json_body(ref("ContextRequest")),
        )},
        f"{detail}/messages/{{message_id}}/stop": {"post": operation(
            "stopMessage", tag, "Stop an answer; the partial answer is kept",
            {**ok(ref("Stopping")), **errors(401, 403, 404)}, parameters=[CONVERSATION_ID, MESSAGE_ID],
        )},
    }
