"""Fixtures of the Django-side tests: a user with an API token and its client, the catalog
seeded again after each flush, the real engine installed in the pool, or a guard that no
engine is reached at all."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chat.models import ApiToken
from inference import ModelSpec, ModelUnavailable, pool, unavailable_reason
from tests.support import MODEL
from tests.support.api import BearerClient


@pytest.fixture
async def api_token(transactional_db) -> str:  # type: ignore[no-untyped-def]
    def make() -> str:
        user = get_user_model().objects.create_user("alice", password="pw-alice-123")
        return ApiToken.issue(user, "test")[1]
    return await sync_to_async(make)()


@pytest.fixture
def client(api_token: str) -> BearerClient:
    return BearerClient(api_token)


@pytest.fixture
def loaded(engine):  # type: ignore[no-untyped-def]
    """The session's engine, serving ``MODEL`` from the pool."""
    pool.set(MODEL, engine)
    return engine


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if a request reaches an engine that could serve: what it checks must be
    refused before any model is needed (so it runs, and runs fast, with no model loaded).
    Models that cannot serve still answer 503 as they would."""
    reached: list[str] = []

    def get(spec: ModelSpec) -> Any:
        reason = unavailable_reason(spec, pool.settings.allow_downloads)
        if reason is None:
            reached.append(spec.name)
            raise AssertionError(f"the request reached the engine of {spec.name}")
        raise ModelUnavailable(spec.name, reason)

    async def aget(spec: ModelSpec) -> Any:
        return get(spec)

    monkeypatch.setattr(pool, "get", get)
    monkeypatch.setattr(pool, "aget", aget)
    yield
    assert not reached, f"the test reached the engine of {reached}"  # even if a view caught the error


@pytest.fixture(autouse=True)
async def drain_background() -> Any:
    """Let detached work (usage records, chat generations) end inside its own test, so it
    never writes while the next test flushes the database; then close the connection it used
    in asgiref's shared sync thread (Django closes it at the next request's start or end;
    left open after the last test, PostgreSQL refuses to drop the test database)."""
    yield
    from django.db import connections

    from chat import background

    await background.drain_background()
    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def catalog(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the tables (migration data included): seed again."""
    if "transactional_db" in request.fixturenames or request.node.get_closest_marker("django_db"):
        request.getfixturevalue("transactional_db")
        from chat.models import CatalogEntry
        from chat.seed import seed_catalog

        seed_catalog(CatalogEntry)
