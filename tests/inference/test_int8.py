"""The 8-bit catalog entry is real: quantized weights, sensible answers."""
from __future__ import annotations

import pytest

from inference.catalog import BUILTIN_CATALOG
from inference.pool import pool
from inference.sequence import SamplingParams

pytestmark = pytest.mark.model


async def test_the_int8_entry_runs_with_8_bit_weights_and_answers() -> None:
    spec = next(s for s in BUILTIN_CATALOG if s.name.endswith("smollm2-135m-instruct-int8"))
    engine = await pool.aget(spec)
    assert engine.loaded.quantization in ("torch-dynamic-int8", "bitsandbytes-int8")
    q_proj = engine.loaded.model.model.layers[0].self_attn.q_proj
    assert "quantized" in type(q_proj).__module__ or "bitsandbytes" in type(q_proj).__module__
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               add_generation_prompt=True)["input_ids"]
    answer = await engine.submit(list(ids), SamplingParams(max_tokens=16, temperature=0)).text()
    assert "Paris" in answer
