"""Browser fixtures: Debian's Chromium driven by Playwright's sync API against ``live_server_proc``.

Playwright's own browser download is not used: ``CHROMIUM_PATH`` (default ``/usr/bin/chromium``)
is launched directly. Each tab records every request URL, console error and page error, so
tests can assert that nothing leaves the server's origin and that the page runs cleanly.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.server import LiveServer

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
USERS = {"alice": "alice-pass-4821", "bob": "bob-pass-9377"}


def chromium_path() -> str:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


# module scope: the sync API keeps an event loop running in this thread until it closes,
# which would break asyncio.run() and pytest-asyncio in the tests that come after
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    if not os.path.exists(path):
        pytest.skip(f"Chromium not found at {path} (set CHROMIUM_PATH)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def create_users(server: LiveServer) -> dict[str, str]:
    """Two ordinary users with passwords, created through manage.py against the server's DB."""
    lines = ["from django.contrib.auth import get_user_model", "U = get_user_model()"]
    for name, password in USERS.items():
        lines.append(f"u = U.objects.filter(username={name!r}).first() or U(username={name!r})")
        lines.append(f"u.set_password({password!r}); u.save()")
    server.manage("shell", "-c", "\n".join(lines))
    return dict(USERS)


@pytest.fixture(scope="session")
def users(live_server_proc: LiveServer) -> dict[str, str]:
    return create_users(live_server_proc)


@dataclass
class Tab:
    """A page in its own browser context, with what it did recorded."""

    page: Any
    base_url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u == self.base_url or u.startswith(self.base_url + "/"))]

    def assert_clean(self) -> None:
        assert self.foreign_requests() == [], "requests left the server's origin"
        assert self.console_errors == [], "the page logged errors"


def login(page: Any, base_url: str, username: str, password: str) -> None:
    """Sign in through the real form (the chat page redirects there first)."""
    page.goto(base_url + "/")
    page.wait_for_url("**/accounts/login/**")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("[data-testid=login-submit]")
    page.wait_for_url(base_url + "/")
    page.wait_for_selector("[data-testid=prompt]")


@pytest.fixture(scope="module")
def sessions(browser: Any, live_server_proc: LiveServer, users: dict[str, str]) -> dict[str, Any]:
    """Signed-in storage states per user, so most tests skip the login form."""
    states = {}
    for name, password in users.items():
        context = browser.new_context()
        login(context.new_page(), live_server_proc.url, name, password)
        states[name] = context.storage_state()
        context.close()
    return states


@pytest.fixture
def open_tab(browser: Any, live_server_proc: LiveServer, sessions: dict[str, Any]) -> Iterator[Callable[..., Tab]]:
    """``open_tab(user="alice", width=1280, height=800, color_scheme="light", bypass_csp=False)``;
    ``user=None`` opens a signed-out tab; ``bypass_csp=True`` lets a test inject scripts (axe-core)."""
    contexts: list[Any] = []

    def open_(user: str | None = "alice", width: int = 1280, height: int = 800, color_scheme: str = "light",
              bypass_csp: bool = False) -> Tab:
        return new_tab(browser, live_server_proc.url, contexts, sessions[user] if user else None,
                       viewport={"width": width, "height": height}, color_scheme=color_scheme, bypass_csp=bypass_csp)

    yield open_
    for context in contexts:
        context.close()


def new_tab(browser: Any, base_url: str, contexts: list[Any], storage_state: Any = None, **options: Any) -> Tab:
    """A page in a new browser context (appended to ``contexts``, for the caller to close) that
    records its requests and errors."""
    context = browser.new_context(storage_state=storage_state, **options)
    context.set_default_timeout(30_000)
    contexts.append(context)
    page = context.new_page()
    tab = Tab(page, base_url)
    page.on("request", lambda request: tab.requests.append(request.url))
    page.on("console", lambda msg: tab.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: tab.console_errors.append(f"pageerror: {exc}"))
    return tab
