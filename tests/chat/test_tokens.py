"""API tokens as admins manage them: issue (secret shown once), revoke, expiry, rate
limits, usage in admin; and the metrics endpoint."""
from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.test import AsyncClient, Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from chat import background
from chat.models import ApiToken, UsageRecord
from tests.support.api import NATIVE_URL, BearerClient, post_json

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_client(transactional_db) -> Client:  # type: ignore[no-untyped-def]
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-12345")
    c = Client()
    c.force_login(admin)
    return c


async def run(client: AsyncClient, **body: object):  # type: ignore[no-untyped-def]
    return await post_json(client, NATIVE_URL, {"prompt": "hi", "max_tokens": 2, **body})


def test_create_api_token_command_prints_the_secret_on_its_last_line(transactional_db) -> None:  # type: ignore[no-untyped-def]
    get_user_model().objects.create_user("carol")
    out = StringIO()
    call_command("create_api_token", "carol", "--name", "laptop", stdout=out, stderr=StringIO())
    secret = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get(name="laptop")
    assert token.matches(secret) and secret.startswith(token.prefix)
    assert secret not in token.secret_hash  # only a hash is stored


def test_admin_creates_a_token_and_shows_the_secret_once(admin_client: Client) -> None:
    owner = get_user_model().objects.get(username="root")
    r = admin_client.post("/admin/chat/apitoken/add/", {"name": "ci", "owner": owner.pk, "rate_limit_per_minute": ""},
                          follow=True)
    assert r.status_code == 200
    page = r.content.decode()
    secret = re.search(r"(wai_[0-9a-f]{8}_[\w-]+)", page).group(1)  # type: ignore[union-attr]
    token = ApiToken.objects.get(name="ci")
    assert token.matches(secret)
    again = admin_client.get(f"/admin/chat/apitoken/{token.pk}/change/").content.decode()
    assert secret not in again and token.prefix in again


def test_admin_revokes_tokens_and_they_stop_working(admin_client: Client) -> None:
    owner = get_user_model().objects.get(username="root")
    token, secret = ApiToken.issue(owner, "old")
    admin_client.post("/admin/chat/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None and not token.is_active()


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_revoked_and_expired_tokens_get_401() -> None:
    def make() -> tuple[str, str, str]:
        u = get_user_model().objects.create_user("dave")
        ok = ApiToken.issue(u, "ok")[1]
        revoked = ApiToken.issue(u, "revoked", revoked_at=timezone.now())[1]
        expired = ApiToken.issue(u, "expired", expires_at=timezone.now() - timedelta(seconds=1))[1]
        return ok, revoked, expired
    ok, revoked, expired = await sync_to_async(make)()
    assert (await run(BearerClient(ok))).status_code == 200
    for secret in (revoked, expired):
        r = await run(BearerClient(secret))
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == 10000


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_a_token_over_its_rate_gets_429_with_retry_after() -> None:
    cache.clear()

    def make() -> str:
        return ApiToken.issue(get_user_model().objects.create_user("erin"), "slow", rate_limit_per_minute=2)[1]
    client = BearerClient(await sync_to_async(make)())
    assert [(await run(client)).status_code for _ in range(2)] == [200, 200]
    r = await run(client)
    assert r.status_code == 429 and 1 <= int(r["Retry-After"]) <= 60
    assert "rate" in r.json()["errors"][0]["message"].lower()


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_usage_shows_in_admin_with_the_right_counts() -> None:
    def make() -> tuple[str, int]:
        admin = get_user_model().objects.create_superuser("frank", "f@example.com", "pw-frank-12345")
        secret = ApiToken.issue(admin, "usage-token")[1]
        return secret, admin.pk
    secret, _ = await sync_to_async(make)()
    client = BearerClient(secret)
    usages = [(await run(client, max_tokens=3)).json()["result"]["usage"] for _ in range(3)]
    await background.drain_background()
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)

    def admin_pages() -> tuple[str, str]:
        c = Client()
        c.force_login(get_user_model().objects.get(username="frank"))
        return (c.get("/admin/chat/usagerecord/").content.decode(), c.get("/admin/chat/apitoken/").content.decode())
    usage_page, token_page = await sync_to_async(admin_pages)()
    assert await UsageRecord.objects.filter(token__name="usage-token").acount() == 3
    row = re.search(r"usage-token \(wai_[0-9a-f]{8}…\)</td>\s*<td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", usage_page)
    assert row is not None and tuple(map(int, row.groups())) == (3, prompt, completion)
    assert str(prompt + completion) in token_page


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_metrics_parse_and_carry_the_series() -> None:
    def make() -> str:
        return ApiToken.issue(get_user_model().objects.create_user("gina", is_staff=True), "m")[1]
    secret = await sync_to_async(make)()  # a staff user's: metrics elsewhere need one (test_security.py)
    await run(BearerClient(secret), max_tokens=4)
    r = await AsyncClient().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert r.status_code == 200
    names = {s.name for f in text_string_to_metric_families(r.content.decode()) for s in f.samples}
    for series in ("inference_requests_running", "inference_requests_waiting",
                   "inference_time_to_first_token_seconds_bucket", "inference_inter_token_latency_seconds_bucket",
                   "inference_request_duration_seconds_count", "inference_generated_tokens_total",
                   "inference_prompt_tokens_total", "inference_requests_total"):
        assert series in names, series
    from django.test import AsyncRequestFactory

    from chat.views.ops import metrics

    def remote(headers: dict[str, str]):  # type: ignore[no-untyped-def]
        request = AsyncRequestFactory().get("/metrics", headers=headers)
        request.META["REMOTE_ADDR"] = "10.1.2.3"
        return request
    assert (await metrics(remote({}))).status_code == 401
    assert (await metrics(remote({"Authorization": f"Bearer {secret}"}))).status_code == 200
