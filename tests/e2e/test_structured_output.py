"""Structured output and tool calls through the real server, with the official ``openai``
client and the native ``/ai/run``: sampled at temperature 0.7, every answer parses and
validates against its schema, streamed and not."""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest
from openai import OpenAI

from bench.schemas import SCHEMAS
from tests.support import MODEL
from tests.support.server import LiveServer
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.server, pytest.mark.model]

MAX_TOKENS = 300
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two numbers",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                   "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def client(live_server_proc: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live_server_proc.url}/v1", api_key=live_server_proc.token(), max_retries=0,
                timeout=300) as c:
        yield c


def in_parallel(fn: Any, items: list[Any]) -> list[Any]:
    """Requests at once, as agent frameworks send them: they share the engine's batches."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(fn, items))


def openai_json(client: OpenAI, item: tuple[str, str, dict[str, Any]], stream: bool) -> str:
    name, question, schema = item
    fields: dict[str, Any] = {
        "model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0.7,
        "max_tokens": MAX_TOKENS,
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}}
    if not stream:
        completion = client.chat.completions.create(**fields)
        assert completion.choices[0].finish_reason == "stop"
        return completion.choices[0].message.content or ""
    chunks = list(client.chat.completions.create(**fields, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_twenty_schemas_through_the_openai_client_always_validate(client: OpenAI, stream: bool) -> None:
    answers = in_parallel(lambda item: openai_json(client, item, stream), SCHEMAS)
    for (name, _, schema), answer in zip(SCHEMAS, answers):
        jsonschema.validate(json.loads(answer), schema), name


def native_json(server: LiveServer, item: tuple[str, str, dict[str, Any]], stream: bool) -> Any:
    _, question, schema = item
    body = {"messages": [{"role": "user", "content": question}], "temperature": 0.7, "max_tokens": MAX_TOKENS,
            "response_format": {"type": "json_schema", "json_schema": schema}, "stream": stream}
    r = httpx.post(f"{server.url}/ai/run/{MODEL}", json=body, timeout=300,
                   headers={"Authorization": f"Bearer {server.token()}"})
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()["result"]["response"]  # Workers AI answers JSON mode with the object itself
    events = [e for e in parse_sse(r.text) if e.data != "[DONE]"]
    return json.loads("".join(json.loads(e.data)["response"] for e in events))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_twenty_schemas_through_ai_run_always_validate(live_server_proc: LiveServer, stream: bool) -> None:
    answers = in_parallel(lambda item: native_json(live_server_proc, item, stream), SCHEMAS)
    for (_, _, schema), answer in zip(SCHEMAS, answers):
        jsonschema.validate(answer, schema)


def test_json_object_mode_gives_an_object(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Reply in JSON with the keys name and age of a cat."}],
        response_format={"type": "json_object"}, max_tokens=MAX_TOKENS, temperature=0.7, seed=3)
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_required_tools_give_valid_calls_that_stream_and_continue(client: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
    completion = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,  # type: ignore[arg-type]
                                                tool_choice="required", temperature=0.7, max_tokens=MAX_TOKENS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])

    # streamed: the deltas assemble (the client's own helper) into the same kind of calls
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS,  # type: ignore[arg-type]
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        temperature=0.7, max_tokens=MAX_TOKENS) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls" and calls
    assert all(c.function.name == "get_weather" for c in calls)
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS["get_weather"])

    # the follow-up with the tool's result is accepted and answered in text
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in calls]}]
    messages += [{"role": "tool", "tool_call_id": c.id, "content": '{"temperature": 21, "sky": "clear"}'}
                 for c in calls]
    answer = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,  # type: ignore[arg-type]
                                            tool_choice="none", max_tokens=40, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content


def test_required_tools_through_ai_run_give_calls_with_argument_objects(live_server_proc: LiveServer) -> None:
    flat = [t["function"] for t in TOOLS]  # Workers AI's shape
    for stream in (False, True):
        body = {"messages": [{"role": "user", "content": "Add 2 and 40."}], "tools": flat,
                "tool_choice": "required", "temperature": 0.7, "max_tokens": MAX_TOKENS, "stream": stream}
        r = httpx.post(f"{live_server_proc.url}/ai/run/{MODEL}", json=body, timeout=300,
                       headers={"Authorization": f"Bearer {live_server_proc.token()}"})
        assert r.status_code == 200, r.text
        if stream:
            events = [json.loads(e.data) for e in parse_sse(r.text) if e.data != "[DONE]"]
            calls = [c for e in events for c in e.get("tool_calls", [])]
        else:
            calls = r.json()["result"]["tool_calls"]
        assert calls
        for call in calls:
            jsonschema.validate(call["arguments"], PARAMETERS[call["name"]])


def test_a_schema_that_cannot_compile_is_400_with_the_reason(client: OpenAI, live_server_proc: LiveServer) -> None:
    import openai

    bad = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}
    with pytest.raises(openai.BadRequestError, match="missing") as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "bad", "schema": bad}})
    assert info.value.body["param"] == "response_format"  # type: ignore[index]
    r = httpx.post(f"{live_server_proc.url}/ai/run/{MODEL}", timeout=60,
                   json={"prompt": "hi", "response_format": {"type": "json_schema", "json_schema": bad}},
                   headers={"Authorization": f"Bearer {live_server_proc.token()}"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 5004 and "missing" in r.text


def test_logprobs_come_with_each_token(client: OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                                logprobs=True, top_logprobs=3, max_tokens=8, temperature=0)
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and "".join(t.token for t in content) == completion.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token for t in content)
    text = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0,
                                     logprobs=2)
    lp = text.choices[0].logprobs
    assert lp is not None and lp.tokens and "".join(lp.tokens) == text.choices[0].text
    assert lp.top_logprobs and all(len(t) <= 2 for t in lp.top_logprobs)


def test_tokenize_and_detokenize_round_trip(live_server_proc: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live_server_proc.token()}"}

    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{live_server_proc.url}{path}", json={"model": MODEL, **body}, headers=headers, timeout=60)

    raw = post("/tokenize", {"prompt": "Hello world, how are you?"}).json()
    assert raw["count"] == len(raw["tokens"]) > 3 and raw["max_model_len"] > 0
    assert post("/detokenize", {"tokens": raw["tokens"]}).json() == {"prompt": "Hello world, how are you?"}
    chat = post("/tokenize", {"messages": [{"role": "user", "content": "Hello world, how are you?"}]}).json()
    with_tools = post("/tokenize", {"messages": [{"role": "user", "content": "Hello world, how are you?"}],
                                    "tools": TOOLS}).json()
    assert raw["count"] < chat["count"] < with_tools["count"]  # the template, then the tools' system prompt
    r = post("/detokenize", {"tokens": [10**9]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
