"""An architecture without a family file runs through transformers' own classes, behind the
same engine: streaming, stop strings, grammars. The model is a tiny random GPT-2 (no family
file describes it) with the built-in model's tokenizer."""
from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest
import torch

from inference import pool
from inference.catalog import ModelSpec
from inference.engine import Engine
from inference.guided import Guide
from inference.loader import gguf_path, gguf_tokenizer, load_model
from inference.sequence import SamplingParams
from tests.support import builtin_spec

pytestmark = pytest.mark.model

ANSWER = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
          "required": ["ok", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):  # type: ignore[no-untyped-def]
    from transformers import GPT2Config, GPT2LMHeadModel

    spec = builtin_spec()
    tokenizer = gguf_tokenizer(gguf_path(spec, pool.settings.model_cache_dir), pool.settings)  # type: ignore[arg-type]
    directory = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    settings = dataclasses.replace(pool.settings, kv_cache_tokens=1024)
    spec = ModelSpec(name="@cf/test/gpt2-tiny", source=f"path:{directory}", context_length=256, max_output_tokens=64)
    loaded = load_model(spec, settings)
    engine = Engine(spec, loaded, settings)
    yield engine, model, tokenizer
    engine.shutdown()


async def test_it_streams_what_transformers_generates_and_stops_at_a_stop_string(gpt2) -> None:  # type: ignore[no-untyped-def]
    engine, model, tokenizer = gpt2
    assert engine.loaded.path == "transformers"
    prompt = tokenizer("The weather today is")["input_ids"]
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False,
                                  min_new_tokens=16)[0, len(prompt):].tolist()
    stream = engine.submit(prompt, SamplingParams(max_tokens=16, min_tokens=16, temperature=0))
    pieces = [piece async for piece in stream]
    text = "".join(pieces)
    assert len(pieces) > 1 and text == tokenizer.decode(expected)
    tail = text[len(text) // 2 : len(text) // 2 + 3]
    cut = engine.submit(prompt, SamplingParams(max_tokens=16, temperature=0, stop=(tail,)))
    assert await cut.text() == text[: text.index(tail)] and cut.finished.finish_reason == "stop"


async def test_its_answers_follow_a_json_schema(gpt2) -> None:  # type: ignore[no-untyped-def]
    engine, _, tokenizer = gpt2
    prompt = tokenizer("Answer in JSON:")["input_ids"]
    for seed in range(3):
        params = SamplingParams(max_tokens=48, temperature=1.0, seed=seed, guide=Guide.json_schema(ANSWER))
        jsonschema.validate(json.loads(await engine.submit(prompt, params).text()), ANSWER)
