"""The catalog as clients list it (``/ai/models/search``, ``/v1/models``): limits, availability,
enabled entries only. Listing never loads a model (``no_engine``)."""
from __future__ import annotations

import time

import pytest

from chat.models import CatalogEntry
from tests.support import MODEL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_engine")]


async def test_models_search_lists_the_catalog_with_limits_and_availability(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/ai/models/search")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["result"]}
    llama = models["@cf/meta/llama-2-7b-chat-int8"]
    props = {p["property_id"]: p["value"] for p in llama["properties"]}
    assert props["context_length_limit"] == "2048" and props["sequence_length_limit"] == "1800"
    assert llama["task"] == {"name": "Text Generation"} and llama["available"] is False
    assert models[MODEL]["available"] is True


async def test_the_account_scoped_models_search_lists_the_catalog(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/client/v4/accounts/abc123/ai/models/search")
    assert r.status_code == 200 and r.json()["success"]
    assert MODEL in [m["name"] for m in r.json()["result"]]


async def test_models_lists_enabled_catalog_entries_by_name(client) -> None:  # type: ignore[no-untyped-def]
    await CatalogEntry.objects.filter(name="@cf/meta/llama-2-7b-chat-fp16").aupdate(is_enabled=False)
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    assert MODEL in models and "@cf/meta/llama-2-7b-chat-int8" in models
    assert "@cf/meta/llama-2-7b-chat-fp16" not in models
    assert models[MODEL]["object"] == "model" and models[MODEL]["owned_by"] == "huggingfacetb"
    assert abs(models[MODEL]["created"] - time.time()) < 3600
