"""The OpenAPI document stays true to the routes, valid OpenAPI 3.1, and readable at /docs."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from chat.openapi import build_document

# Routes that are pages for people, not API: the chat page, Django's admin and login.
PAGES = ("", "c/<int:conversation_id>")
PAGE_PREFIXES = ("admin/", "accounts/")
METHODS = {"get", "post", "put", "patch", "delete"}


def routes(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def api_routes() -> set[str]:
    """Every route of waiproject/urls.py and chat/urls.py but the pages, as OpenAPI paths."""
    return {"/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r) for r in routes(get_resolver().url_patterns)
            if r not in PAGES and not r.startswith(PAGE_PREFIXES)}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def test_every_route_is_documented_and_every_documented_path_is_a_route(document: dict[str, Any]) -> None:
    assert set(document["paths"]) == api_routes()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_operation_has_an_id_a_tag_and_its_error_responses(document: dict[str, Any]) -> None:
    ids = []
    for path, item in document["paths"].items():
        for method in METHODS & item.keys():
            operation = item[method]
            ids.append(operation["operationId"])
            assert operation["tags"] and operation["summary"], (method, path)
            secured = operation.get("security", document["security"]) != [{}]
            if secured and path != "/metrics":
                assert "401" in operation["responses"], (method, path)
    assert len(ids) == len(set(ids))


def test_documented_limits_are_the_enforced_ones(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    run = schemas["RunRequest"]["properties"]
    assert (run["temperature"]["minimum"], run["temperature"]["maximum"]) == (0, 5)
    assert run["top_p"]["exclusiveMinimum"] == 0 and (run["top_k"]["minimum"], run["top_k"]["maximum"]) == (1, 50)
    assert run["stop"]["oneOf"][1]["maxItems"] == 4
    assert schemas["RunRequest"]["oneOf"] == [{"required": ["prompt"]}, {"required": ["messages"]}]
    assert schemas["MessageRequest"]["properties"]["content"]["maxLength"] == 100_000
    assert schemas["ChatMessage"]["properties"]["role"]["enum"] == ["system", "user", "assistant", "developer"]


def test_errors_are_documented_in_their_endpoints_envelope(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        expected = "OpenAIError" if path.startswith(("/v1/", "/tokenize", "/detokenize")) else "Error"
        for method in METHODS & item.keys():
            for status, response in item[method]["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, status)


def test_openapi_json_serves_the_document() -> None:
    response = Client().get("/openapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json() == build_document()


def test_the_reference_page_shows_every_operation_without_inline_script_or_style(document: dict[str, Any]) -> None:
    response = Client().get("/docs")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for path, item in document["paths"].items():
        for method in METHODS & item.keys():
            assert f'id="{item[method]["operationId"]}"' in html
        assert f'<code class="path">{path}</code>' in html
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    # one script, served from static (the stored light/dark choice, applied before first paint)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/theme-init.js">']
    assert "style=" not in html and "<style" not in html
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "/static/docs.css" in html and "http://" not in html and "https://" not in html
