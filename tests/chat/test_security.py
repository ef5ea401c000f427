"""What an attacker or a careless client can and cannot get: sign-in throttling, no password
reset without email, a new token's secret shown once and never in a cookie, who may read
/metrics, and 500s that carry no server detail."""
from __future__ import annotations

import ipaddress
import re
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import path

from chat.models import ApiToken
from chat.views.door import api_view
from inference import pool
from tests.support.api import native_error, openai_error
from waiproject import urls
from waiproject.settings import env_networks

pytestmark = [pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-alice-123"


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    cache.clear()  # failure counts live in the cache


@pytest.fixture
def alice(transactional_db) -> Any:  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user("alice", password=PASSWORD, is_staff=True)


def sign_in(url: str, password: str, address: str = "10.0.0.1") -> Any:
    return Client(REMOTE_ADDR=address).post(url, {"username": "alice", "password": password})


# sign-in throttling ----------------------------------------------------------------------
@override_settings(LOGIN_THROTTLE_ATTEMPTS=3)
@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_sign_in_is_refused_after_repeated_failures_without_checking_the_password(alice: Any, url: str) -> None:
    assert [sign_in(url, "wrong").status_code for _ in range(3)] == [200, 200, 200]  # the form again
    with mock.patch.object(get_user_model(), "check_password") as check_password:
        refused = sign_in(url, PASSWORD)
    check_password.assert_not_called()
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many failed sign-in attempts" in refused.content.decode()
    assert "_auth_user_id" not in refused.client.session
    assert sign_in(url, PASSWORD, address="10.0.0.2").status_code == 302  # another address is not affected


@override_settings(LOGIN_THROTTLE_ATTEMPTS=3)
def test_a_successful_sign_in_clears_the_failures(alice: Any) -> None:
    for _ in range(2):
        sign_in("/accounts/login/", "wrong")
    assert sign_in("/accounts/login/", PASSWORD).status_code == 302
    for _ in range(2):
        sign_in("/accounts/login/", "wrong")
    assert sign_in("/accounts/login/", PASSWORD).status_code == 302


# accounts routes ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/accounts/password_reset/", "/accounts/password_reset/done/",
                                  "/accounts/reset/MQ/set-password/", "/accounts/reset/done/"])
def test_password_reset_is_not_routed(transactional_db, path: str) -> None:  # type: ignore[no-untyped-def]
    assert Client().get(path).status_code == 404


def test_a_signed_in_user_can_change_their_password(alice: Any) -> None:
    client = Client()
    client.force_login(alice)
    assert client.get("/accounts/password_change/").status_code == 200
    r = client.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": "a-new-pw-4567",
                                                   "new_password2": "a-new-pw-4567"})
    assert r.status_code == 302 and client.get(r["Location"]).status_code == 200
    assert Client().login(username="alice", password="a-new-pw-4567")


# a new token's secret ------------------------------------------------------------------------
def test_a_new_tokens_secret_is_in_the_add_response_only(transactional_db) -> None:  # type: ignore[no-untyped-def]
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-12345")
    client = Client()
    client.force_login(admin)
    r = client.post("/admin/chat/apitoken/add/", {"name": "ci", "owner": admin.pk, "rate_limit_per_minute": ""})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    secret = re.search(r"(wai_[0-9a-f]{8}_[\w-]+)", r.content.decode()).group(1)  # type: ignore[union-attr]
    assert ApiToken.objects.get(name="ci").matches(secret)
    assert all(secret not in morsel.value for morsel in client.cookies.values())
    assert secret not in str(dict(client.session))
    assert secret not in client.get("/admin/chat/apitoken/").content.decode()


# /metrics ----------------------------------------------------------------------------------
def metrics(address: str, token: str | None = None, **headers: str) -> int:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return int(Client(REMOTE_ADDR=address).get("/metrics", headers=headers).status_code)


def test_metrics_are_open_to_this_machine_only(transactional_db) -> None:  # type: ignore[no-untyped-def]
    assert [metrics(a) for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1")] == [200, 200, 200]
    assert metrics("10.1.2.3") == 401
    assert metrics("10.1.2.3", X_Forwarded_For="127.0.0.1") == 401  # a forwarded header is not the peer


def test_metrics_elsewhere_need_a_staff_users_token(alice: Any) -> None:
    staff = ApiToken.issue(alice, "scraper")[1]
    other = ApiToken.issue(get_user_model().objects.create_user("bob"), "b")[1]
    assert metrics("10.1.2.3", staff) == 200
    assert metrics("10.1.2.3", other) == 403
    assert metrics("10.1.2.3", "wai_00000000_not-a-token") == 401


def test_metrics_allow_the_configured_networks(transactional_db) -> None:  # type: ignore[no-untyped-def]
    with override_settings(METRICS_ALLOW_CIDRS=[ipaddress.ip_network("10.0.0.0/8")]):
        assert (metrics("10.1.2.3"), metrics("127.0.0.1")) == (200, 401)


def test_metrics_allow_cidrs_must_be_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_ALLOW_CIDRS", "10.0.0.0/8, ::1/128")
    assert [str(n) for n in env_networks("METRICS_ALLOW_CIDRS", "")] == ["10.0.0.0/8", "::1/128"]
    monkeypatch.setenv("METRICS_ALLOW_CIDRS", "10.0.0.0/33")
    with pytest.raises(ImproperlyConfigured, match="METRICS_ALLOW_CIDRS"):
        env_networks("METRICS_ALLOW_CIDRS", "")


# 500s ----------------------------------------------------------------------------------------
_DETAIL = "/srv/app/secret_module.py exploded"


def _bug(request: Any) -> Any:
    raise RuntimeError(_DETAIL)


async def _async_bug(request: Any) -> Any:
    _bug(request)


# This module is the URLconf of the tests below: views with a bug, inside and outside the door.
urlpatterns = [
    path("ai/bug", api_view("GET", authenticated=False)(_async_bug)),
    path("v1/bug", api_view("GET", envelope="openai", authenticated=False)(_async_bug)),
    path("v1/outside", _bug),
    path("page", _bug),
]
handler500 = urls.handler500


def test_readyz_says_a_load_failed_without_its_detail(transactional_db, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pool, "is_loaded", lambda name: False)
    monkeypatch.setattr(pool, "failure", lambda name: f"failed to load: OSError: {_DETAIL}")
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"
    assert _DETAIL not in response.content.decode()


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize("url", ["/ai/bug", "/v1/bug", "/v1/outside"])
def test_a_bug_behind_an_api_path_is_a_generic_500_in_its_envelope(url: str, caplog: pytest.LogCaptureFixture) -> None:
    response = Client(raise_request_exception=False).get(url)
    assert response.status_code == 500 and _DETAIL not in response.content.decode()
    if url.startswith("/v1/"):
        assert openai_error(response) == {"message": "Internal server error", "type": "server_error", "code": None,
                                          "param": None}
    else:
        assert native_error(response) == (500, 3043)
    assert _DETAIL in caplog.text  # the detail, with its traceback, is for whoever runs the server


@override_settings(ROOT_URLCONF=__name__)
def test_a_bug_behind_a_page_is_djangos_html_500() -> None:
    response = Client(raise_request_exception=False).get("/page")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
    assert _DETAIL not in response.content.decode()
