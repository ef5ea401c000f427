"""Constrained decoding on the real model: output always matches its grammar, and a
constrained row does not change the free rows batched with it."""
from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from inference.guided import Guide, InvalidGrammar
from inference.sequence import SamplingParams
from inference.tools import Tool, parse_tool_calls, render_messages, tool_guide

pytestmark = pytest.mark.model

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"enum": ["chess", "music", "hiking"]}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}


def chat_ids(engine, text: str, system: str | None = None) -> list[int]:  # type: ignore[no-untyped-def]
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return engine.encode(messages=messages)


async def test_sampled_output_always_parses_and_validates_against_the_schema(engine) -> None:  # type: ignore[no-untyped-def]
    guide = Guide.json_schema(PERSON)
    engine.compile_guide(guide)
    params = [SamplingParams(max_tokens=200, temperature=0.9, seed=s, guide=guide) for s in range(8)]
    answers = await asyncio.gather(*[engine.submit(chat_ids(engine, "Describe a person."), p).text() for p in params])
    for answer in answers:
        jsonschema.validate(json.loads(answer), PERSON)


async def test_a_constrained_row_leaves_the_free_rows_of_its_batch_unchanged(fp32_engine) -> None:  # type: ignore[no-untyped-def]
    engine = fp32_engine
    greedy = SamplingParams(max_tokens=24, temperature=0)
    question = chat_ids(engine, "Name three colors.")
    alone = await engine.submit(question, greedy).text()
    guided = SamplingParams(max_tokens=100, temperature=0, guide=Guide.json_schema(PERSON))
    results = await asyncio.gather(engine.submit(chat_ids(engine, "Describe a person."), guided).text(),
                                   *[engine.submit(question, greedy).text() for _ in range(3)])
    jsonschema.validate(json.loads(results[0]), PERSON)
    assert list(results[1:]) == [alone] * 3


async def test_a_regex_guide_is_followed(engine) -> None:  # type: ignore[no-untyped-def]
    guide = Guide("regex", r"(yes|no), because [a-z ]{3,30}\.")
    engine.compile_guide(guide)
    answer = await engine.submit(chat_ids(engine, "Is the sea blue?"),
                                 SamplingParams(max_tokens=40, temperature=0.7, seed=1, guide=guide)).text()
    assert re.fullmatch(r"(yes|no), because [a-z ]{3,30}\.", answer), answer


def test_a_schema_that_cannot_compile_is_refused_with_the_reason(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidGrammar, match="nope"):
        engine.compile_guide(Guide.json_schema({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}))


async def test_required_tool_choice_gives_calls_with_valid_arguments(engine) -> None:  # type: ignore[no-untyped-def]
    weather = Tool("get_weather", "Current weather of a city", {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False})
    add = Tool("add", "Add two numbers", {"type": "object", "properties": {"a": {"type": "number"},
                                                                           "b": {"type": "number"}},
                                          "required": ["a", "b"]})
    guide = tool_guide([weather, add], "required", parallel=False)
    assert guide is not None
    engine.compile_guide(guide)
    messages = render_messages([{"role": "user", "content": "What is the weather in Paris?"}], [weather, add])
    for seed in range(4):
        text = await engine.submit(engine.encode(messages=messages),
                                   SamplingParams(max_tokens=80, temperature=0.7, seed=seed, guide=guide)).text()
        rest, calls = parse_tool_calls(text)
        assert rest == "" and len(calls) == 1, text
        name, arguments = calls[0]
        jsonschema.validate(json.loads(arguments), {"get_weather": weather, "add": add}[name].parameters)


async def test_logprobs_come_with_each_token_and_stop_token_ids_end_the_answer(engine) -> None:  # type: ignore[no-untyped-def]
    question = chat_ids(engine, "Count from one to ten in words.")
    free = await engine.submit(question, SamplingParams(max_tokens=12, temperature=0)).text()
    stream = engine.submit(question, SamplingParams(max_tokens=12, temperature=0, logprobs=3))
    assert await stream.text() == free
    logprobs = stream.take_logprobs()
    assert len(logprobs) == stream.finished.usage.completion_tokens
    assert "".join(lp.token for lp in logprobs) == free
    for lp in logprobs:  # greedy: the chosen token is the likeliest
        assert len(lp.top) == 3 and lp.top[0][0] == lp.token and lp.logprob <= 0
        assert abs(lp.top[0][1] - lp.logprob) < 1e-4
    second = engine.submit(question, SamplingParams(max_tokens=12, temperature=0))
    ids = [lp.token_id for lp in logprobs]
    stopped = engine.submit(question, SamplingParams(max_tokens=12, temperature=0, stop_token_ids=(ids[3],)))
    assert await second.text() == free
    cut = await stopped.text()
    assert stopped.finished.finish_reason == "stop" and free.startswith(cut) and len(cut) < len(free)


def test_the_generation_schema_narrows_without_leaving_the_original() -> None:
    from inference.guided import generation_schema

    schema = {"type": "object", "properties": {
        "n": {"type": "number", "maximum": 5}, "k": {"type": "number", "multipleOf": 0.5},
        "inner": {"type": "object", "properties": {"a": {"type": "string"}}},
        "open": {"type": "object", "properties": {}, "additionalProperties": True},
        "c": {"const": {"properties": {}}}}}
    narrowed = generation_schema(schema)
    assert narrowed["additionalProperties"] is False
    props = narrowed["properties"]
    assert props["n"] == {"type": "number", "maximum": 5, "multipleOf": 1e-6}
    assert props["k"] == {"type": "number", "multipleOf": 0.5}
    assert props["inner"]["additionalProperties"] is False and props["open"]["additionalProperties"] is True
    assert props["c"] == {"const": {"properties": {}}}  # values are data, not schemas
    assert "additionalProperties" not in schema  # the caller's schema is left as it was
