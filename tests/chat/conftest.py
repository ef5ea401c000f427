from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from chat.models import ApiToken


class BearerClient(AsyncClient):
    """AsyncClient that sends ``Authorization: Bearer`` on every request.

    (Django 5.2's AsyncClient mangles client-level ``headers=`` into ``Http-*``.)
    """

    def __init__(self, token: str | None = None, authorization: str | None = None) -> None:
        super().__init__()
        value = authorization or (f"Bearer {token}" if token else None)
        self._auth = {"Authorization": value} if value else {}

    def generic(self, *args: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return super().generic(*args, headers={**self._auth, **(headers or {})}, **kwargs)


@pytest.fixture
async def api_token(transactional_db) -> str:  # type: ignore[no-untyped-def]
    def make() -> str:
        user = get_user_model().objects.create_user("alice", password="pw-alice-123")
        return ApiToken.issue(user, "test")[1]
    return await sync_to_async(make)()


@pytest.fixture
def client(api_token: str) -> BearerClient:
    return BearerClient(api_token)


@pytest.fixture(autouse=True)
async def drain_background() -> Any:
    """Let detached work (usage records, chat generations) end inside its own test, so it
    never writes while the next test flushes the database."""
    yield
    from chat import background

    await background.drain_background()


@pytest.fixture(autouse=True)
def catalog(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the tables (migration data included): seed again."""
    if "transactional_db" in request.fixturenames or request.node.get_closest_marker("django_db"):
        request.getfixturevalue("transactional_db")
        from chat.models import CatalogEntry
        from chat.seed import seed_catalog

        seed_catalog(CatalogEntry)
