"""Cloudflare's own Python SDK (``cloudflare`` on PyPI, written by Cloudflare, not here) works
against this server unchanged: pointed at ``/client/v4`` it runs models with a prompt or with
messages, lists the catalog, and turns our error envelopes into its typed exceptions.

It talks to the real ASGI application (model loaded) through httpx's ASGI transport.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import cloudflare
import httpx
import pytest
from django.core.asgi import get_asgi_application

from tests.support import MODEL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loaded")]
ACCOUNT = "0123456789abcdef"


@pytest.fixture
async def sdk(api_token: str) -> AsyncIterator[cloudflare.AsyncCloudflare]:
    transport = httpx.ASGITransport(app=get_asgi_application())
    async with httpx.AsyncClient(transport=transport) as http:
        yield cloudflare.AsyncCloudflare(api_token=api_token, base_url="http://testserver/client/v4",
                                         http_client=http, max_retries=0)


def text_of(result: Any) -> str:
    """The SDK parses a text-generation result into one of its response models."""
    response = result["response"] if isinstance(result, dict) else result.response
    assert isinstance(response, str)
    return response


async def test_run_with_a_prompt(sdk: cloudflare.AsyncCloudflare) -> None:
    result = await sdk.ai.run(MODEL, account_id=ACCOUNT, prompt="Where is Paris?", max_tokens=8, temperature=0)
    assert text_of(result).strip()


async def test_run_with_messages_is_the_same_answer_as_over_plain_http(sdk: cloudflare.AsyncCloudflare,
                                                                       api_token: str) -> None:
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of Italy?"}]
    result = await sdk.ai.run(MODEL, account_id=ACCOUNT, messages=messages, max_tokens=6, temperature=0)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=get_asgi_application())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        plain = (await http.post(f"/ai/run/{MODEL}", headers={"Authorization": f"Bearer {api_token}"},
                                 json={"messages": messages, "max_tokens": 6, "temperature": 0})).json()
    assert text_of(result) == plain["result"]["response"]


async def test_models_list_returns_the_catalog(sdk: cloudflare.AsyncCloudflare) -> None:
    page = await sdk.ai.models.list(account_id=ACCOUNT)
    models = {m["name"]: m for m in page.result}
    assert models[MODEL]["task"] == {"name": "Text Generation"}


async def test_iterating_models_list_ends_after_the_catalog(sdk: cloudflare.AsyncCloudflare) -> None:
    names: list[str] = []
    async for model in sdk.ai.models.list(account_id=ACCOUNT):
        names.append(model["name"])
        if len(names) > 100:  # without paging, the SDK would ask for the next page forever
            break
    assert MODEL in names and len(names) == len(set(names))


async def test_a_bad_token_raises_its_authentication_error(sdk: cloudflare.AsyncCloudflare) -> None:
    with pytest.raises(cloudflare.AuthenticationError) as raised:
        await sdk.with_options(api_token="wai_nope_nope").ai.run(MODEL, account_id=ACCOUNT, prompt="hi")
    assert raised.value.status_code == 401


async def test_an_unknown_model_raises_bad_request_with_our_message(sdk: cloudflare.AsyncCloudflare) -> None:
    with pytest.raises(cloudflare.BadRequestError) as raised:
        await sdk.ai.run("@cf/nobody/nothing", account_id=ACCOUNT, prompt="hi")
    body: Any = raised.value.body
    assert body["errors"][0] == {"code": 5007, "message": "No such model @cf/nobody/nothing or task"}
