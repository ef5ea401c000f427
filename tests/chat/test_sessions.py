"""The page and the API as a logged-in browser uses them: login required, CSRF on session posts.
No model is needed (``no_engine``)."""
from __future__ import annotations

import pytest
from django.test import AsyncClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_engine")]


async def test_session_posts_need_the_csrf_token(api_token) -> None:  # type: ignore[no-untyped-def]
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.alogin(username="alice", password="pw-alice-123")
    page = await browser.get("/")
    assert page.status_code == 200
    csrf = page.cookies["csrftoken"].value
    r = await browser.post("/api/conversations", "{}", content_type="application/json")
    assert r.status_code == 403
    r = await browser.post("/api/conversations", "{}", content_type="application/json", headers={"X-CSRFToken": csrf})
    assert r.status_code == 201


async def test_the_page_requires_login() -> None:
    r = await AsyncClient().get("/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")
