"""The official ``openai`` Python client against the real server (daphne in a subprocess)."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.support import MODEL
from tests.support.server import LiveServer

pytestmark = [pytest.mark.server, pytest.mark.model]


@pytest.fixture(scope="module")
def client(live_server_proc: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live_server_proc.url}/v1", api_key=live_server_proc.token(), max_retries=0,
                timeout=120) as c:
        yield c


def ask(client: OpenAI, content: str, **fields: object):  # type: ignore[no-untyped-def]
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                          **fields)  # type: ignore[call-overload]


def test_it_lists_the_catalog_models(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and "@cf/meta/llama-2-7b-chat-int8" in ids
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("@cf/nobody/nothing")


def test_it_completes_a_chat(client: OpenAI) -> None:
    completion = ask(client, "Where is Paris?", max_tokens=8, temperature=0)
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length") and completion.model == MODEL
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8


def test_it_completes_text(client: OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5,
                                           temperature=0)
    assert completion.choices[0].text and completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 5


def test_it_streams_a_chat_with_usage_at_the_end(client: OpenAI) -> None:
    fields = {"max_tokens": 8, "temperature": 0}
    plain = ask(client, "Where is Paris?", **fields)
    chunks = list(ask(client, "Where is Paris?", stream=True, stream_options={"include_usage": True}, **fields))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_stop_sequence_is_not_part_of_the_answer(client: OpenAI) -> None:
    full = ask(client, "Name five colors of the rainbow.", max_tokens=12, temperature=0).choices[0].message.content
    assert full is not None and len(full.split()) >= 4, full
    stop = " " + full.split()[2]
    stopped = ask(client, "Name five colors of the rainbow.", max_tokens=12, temperature=0, stop=[stop])
    assert stopped.choices[0].message.content == full[: full.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_bad_key_raises_authentication_error(live_server_proc: LiveServer) -> None:
    with OpenAI(base_url=f"{live_server_proc.url}/v1", api_key="wai_not_a_real_key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            ask(bad, "hi", max_tokens=1)
    assert caught.value.code == "invalid_api_key"


def test_unknown_model_raises_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="@cf/nobody/nothing", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("fields, param", [({"n": 2}, "n"), ({"temperature": 9}, "temperature")])
def test_invalid_request_raises_bad_request(client: OpenAI, fields: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hi", max_tokens=1, **fields)
    assert caught.value.param == param


def test_prompt_longer_than_the_context_raises_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hello " * 7000, max_tokens=1)
    assert caught.value.code == "context_length_exceeded" and "context" in caught.value.message


def test_closing_a_stream_stops_generation_on_the_server(client: OpenAI, live_server_proc: LiveServer) -> None:
    stream = ask(client, "Write a very long story about a dragon.", max_tokens=400, stream=True)
    request_id = ""
    for chunk in stream:
        request_id = chunk.id.removeprefix("chatcmpl-")
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    pattern = re.compile(rf"id={request_id} .*completion_tokens=(\d+) .*finish_reason=(\w+)")
    deadline = time.monotonic() + 30
    while not (match := pattern.search(live_server_proc.log())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert match is not None, live_server_proc.log()[-2000:]
    assert match.group(2) == "abort" and int(match.group(1)) < 400
