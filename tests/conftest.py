"""Session fixtures: the real model (loaded once) and a live server; and the marks that say
what a test costs (``model``, ``server``, ``browser``), so ``-m`` can pick the fast ones.

Plain helpers (SSE, clients, server start/stop) live in ``tests/support``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from django.test import override_settings

from tests.support import builtin_spec
from tests.support.server import LiveServer, running_server

# A test that uses one of these fixtures needs what it loads, whatever its module says.
FIXTURE_MARKS = {
    "engine": ("model",),
    "fp32_engine": ("model",),
    "live_server_proc": ("server", "model"),  # the server loads the default model before it is ready
}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in FIXTURE_MARKS.keys() & set(getattr(item, "fixturenames", ())):
            for mark in FIXTURE_MARKS[name]:
                item.add_marker(mark)


@pytest.fixture(scope="session", autouse=True)
def engines_stay_loaded() -> Iterator[None]:
    """The session's engines are shared by tests far apart in time: none is unloaded for being
    idle (INFERENCE_KEEP_ALIVE has its own test, on a server of its own)."""
    from django.conf import settings

    with override_settings(INFERENCE=dataclasses.replace(settings.INFERENCE, keep_alive=-1)):
        yield


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Hash the test users' passwords cheaply, as Django's testing docs advise: PBKDF2 costs
    more than half a second a user on this machine, most of a Django test's setup. Servers
    started by the tests keep the real hasher."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    """The real default model's engine, shared by the whole session."""
    from inference import pool

    return pool.get(builtin_spec())


@pytest.fixture(scope="session")
def live_server_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server with the default settings (as ``make run``), shared by the session."""
    with running_server(tmp_path_factory.mktemp("live")) as server:
        yield server
