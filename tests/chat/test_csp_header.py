"""Every HTML page carries the strict Content-Security-Policy, and none needs an exception to it:
no inline script, no inline style, no javascript: URL."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.middleware import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=|javascript:", re.IGNORECASE)


@pytest.mark.parametrize(("path", "signed_in"), [
    ("/", True),
    ("/accounts/login/", False),
    ("/admin/login/", False),
])
def test_html_pages_carry_the_policy_and_nothing_inline(path: str, signed_in: bool) -> None:
    client = Client()
    if signed_in:
        client.force_login(get_user_model().objects.create_user("carol", password="pw-carol-123"))
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in response["Content-Security-Policy"]
    html = response.content.decode()
    assert INLINE_SCRIPT.findall(html) == []
    assert INLINE_STYLE.findall(html) == []
    assert INLINE_HANDLER.findall(html) == []

