"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document.

Schemathesis generates valid and invalid requests for every documented operation and sends
them to a real server (the model loaded, its output capped so every generation stays short).
Whatever it sends, the server must answer without a 5xx, with a status, content type and body
the document declares, and every error in its endpoint's envelope.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chat.openapi import build_document
from tests.support import MODEL
from tests.support.server import LiveServer

pytestmark = [pytest.mark.model, pytest.mark.server]

MAX_OUTPUT_TOKENS = 4  # the served model's cap on the server while fuzzing: no generation runs long
EXAMPLES_PER_OPERATION = 25
UNKNOWN_MODEL = "@cf/nobody/no-such-model"
OWN = 1_000_000_001  # stands for the fuzzer's own conversation (or answer) until the request is sent
API_PREFIXES = ("/ai/", "/client/v4/", "/v1/", "/api/", "/tokenize", "/detokenize")  # the rest (health, metrics,
# docs) are Django's plain views
OPENAI_PATHS = ("/v1/", "/tokenize", "/detokenize")
OWNED = ("conversation_id", "message_id")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def aimed_document() -> dict[str, Any]:
    """The document, narrowed so generated requests get past the first check: the served model
    (or one unknown name), output budgets within the cap, the fuzzer's own conversation (``OWN``)
    or one that does not exist. Deleting is aimed at no conversation in particular."""
    document = build_document()
    models = {"enum": [MODEL, UNKNOWN_MODEL]}
    schemas = document["components"]["schemas"]
    for name in ("RunRequest", "ChatCompletionRequest", "CompletionRequest", "ConversationSettings", "MessageRequest",
                 "TokenizeRequest", "DetokenizeRequest"):
        properties = schemas[name]["properties"]
        if "model" in properties:
            properties["model"] = models
        for budget in ("max_tokens", "max_completion_tokens"):
            if budget in properties:
                properties[budget]["maximum"] = MAX_OUTPUT_TOKENS
    for item in document["paths"].values():
        shared = item.pop("parameters", [])
        for operation in item.values():
            operation["parameters"] = [dict(p) for p in shared + operation.get("parameters", [])]
            for parameter in operation["parameters"]:
                if parameter["name"] == "model":
                    parameter["schema"] = models
                elif parameter["name"] in OWNED and operation["operationId"] != "deleteConversation":
                    parameter["schema"] = {"enum": [OWN, 999_999]}
    return document


schema = schemathesis.openapi.from_dict(aimed_document())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION)


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]
    ids: dict[str, int]  # what ``OWN`` stands for, by parameter name


@pytest.fixture(scope="module")
def target(live_server_proc: LiveServer) -> Iterator[Target]:
    """The session's server, its model's output capped for this module (restored after), and a
    conversation of the fuzzer's with one finished answer."""
    server = live_server_proc

    def cap(tokens: int | str) -> str:
        """Set the cap; the one it replaced."""
        return server.manage("shell", "-v", "0", "-c", (
            f"from chat.models import CatalogEntry; rows = CatalogEntry.objects.filter(name={MODEL!r}); "
            f"print(rows.get().max_output_tokens); rows.update(max_output_tokens={tokens})")).strip()

    before = cap(MAX_OUTPUT_TOKENS)
    auth = {"Authorization": f"Bearer {server.token('fuzzer')}"}
    conversation = httpx.post(f"{server.url}/api/conversations", json={}, headers=auth).json()["result"]
    turn = httpx.post(f"{server.url}/api/conversations/{conversation['id']}/messages",
                      json={"content": "Hi"}, headers=auth, timeout=60).json()["result"]
    httpx.get(f"{server.url}{turn['stream_url']}", headers=auth, timeout=60).raise_for_status()  # to its end
    yield Target(server.url, auth, {"conversation_id": conversation["id"],
                                    "message_id": turn["assistant_message"]["id"]})
    cap(before)


def assert_error_envelope(path: str, response: Any, request: str) -> None:
    """An API error is JSON in its endpoint's envelope: OpenAI's under /v1, Workers AI's elsewhere."""
    assert response.headers.get("content-type") == ["application/json"], (request, response.status_code,
                                                                           response.headers, response.content[:500])
    body = response.json()
    if path.startswith(OPENAI_PATHS):
        error = body["error"]
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        assert {"code", "param"} <= error.keys()
    else:
        assert body["success"] is False and body["result"] is None and body["messages"] == []
        assert body["errors"] and all(isinstance(e["code"], int) and e["message"] for e in body["errors"])


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_generated_request_is_answered_as_documented(case: schemathesis.Case, target: Target) -> None:
    for name, value in (case.path_parameters or {}).items():
        if value == OWN:
            case.path_parameters[name] = target.ids[name]
    response = case.call(base_url=target.url, headers=target.headers, timeout=60)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400 and case.operation.path.startswith(API_PREFIXES):
        assert_error_envelope(case.operation.path, response, case.as_curl_command())


def test_nothing_the_fuzzer_sent_made_the_server_log_an_exception(target: Target,
                                                                   live_server_proc: LiveServer) -> None:
    """Runs after the fuzzing above; catches what fails after a response has started."""
    log = live_server_proc.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
