"""The engine on the real embedded model."""
from __future__ import annotations

import asyncio

import pytest

from inference.errors import GenerationFailed
from inference.sequence import SamplingParams
from tests.support import builtin_spec

pytestmark = pytest.mark.model

QUESTIONS = ["where is new york?", "What is 2+2?", "Write a haiku about the sea.", "Name three colors."]


def ids(engine, q: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(engine.tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                                     add_generation_prompt=True)["input_ids"])


# Batching must never mix requests up. In float32 a row's numbers do not depend on the
# batch around it, so answers must be identical; the bf16 fast path is held to the
# float32 answers statistically in test_quality.py (near-ties may break differently
# there, as in every engine that batches in bf16).
async def test_batched_greedy_output_equals_single_request_output(fp32_engine) -> None:  # type: ignore[no-untyped-def]
    engine = fp32_engine
    greedy = SamplingParams(max_tokens=24, temperature=0)
    alone = [await engine.submit(ids(engine, q), greedy).text() for q in QUESTIONS]
    together = await asyncio.gather(*[engine.submit(ids(engine, q), greedy).text() for q in QUESTIONS * 3])
    assert list(together) == alone * 3
    assert all(alone)


@pytest.mark.parametrize("attention", ["native", "sdpa"])
async def test_a_long_conversation_batched_with_short_ones_keeps_every_answer(fp32_engine, monkeypatch,  # type: ignore[no-untyped-def]
                                                                             attention) -> None:
    """Rows whose contexts differ a lot: the native kernel reads each row's own keys; without
    it they attend row by row (ragged), not padded to the longest. Either way each answer is
    the one it gets alone."""
    from inference.layers import Attention

    engine = fp32_engine
    model = engine.runner.model
    used = []
    if attention == "native":
        if model.decode_attention is None:
            pytest.skip("no C compiler here: the native decode attention kernel was not built")
        real_kernel = model.decode_attention

        def spy_kernel(q, *args):  # type: ignore[no-untyped-def]
            used.append(q.shape[0] > 1)
            return real_kernel(q, *args)

        for block in model.blocks:
            monkeypatch.setattr(block.attn, "decode_kernel", spy_kernel)
    else:
        real = Attention._decode
        monkeypatch.setattr(model, "decode_attention", None)  # the runner gathers keys for SDPA

        def spy(self, q, batch, cache_k, cache_v):  # type: ignore[no-untyped-def]
            used.append(batch.decode_lengths is not None)
            return real(self, q, batch, cache_k, cache_v)

        monkeypatch.setattr(Attention, "_decode", spy)
    greedy = SamplingParams(max_tokens=16, temperature=0)
    passage = " ".join(f"Line {i}: the river keeps flowing past the old mill." for i in range(60))
    prompts = [ids(engine, f"{passage}\nWhat does the river do?")] + [ids(engine, q) for q in QUESTIONS[:3]]
    assert len(prompts[0]) > 600
    alone = [await engine.submit(p, greedy).text() for p in prompts]
    together = await asyncio.gather(*[engine.submit(p, greedy).text() for p in prompts])
    assert list(together) == alone and all(alone)
    assert any(used)  # several rows went through the path under test


async def test_the_same_request_twice_gives_the_same_answer_with_the_prefix_cache(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = ids(engine, "Tell me about the moon in three sentences.")
    greedy = SamplingParams(max_tokens=40, temperature=0)
    first = engine.submit(prompt, greedy)
    text = await first.text()
    second = engine.submit(prompt, greedy)
    assert await second.text() == text
    assert second.finished.usage.cached_tokens >= len(prompt) - 16  # all but the last block came from the cache


async def test_a_request_that_joins_a_running_batch_gets_the_same_answer(fp32_engine) -> None:  # type: ignore[no-untyped-def]
    engine = fp32_engine
    greedy = SamplingParams(max_tokens=20, temperature=0)
    expected = await engine.submit(ids(engine, QUESTIONS[1]), greedy).text()
    long_runner = engine.submit(ids(engine, QUESTIONS[0]), SamplingParams(max_tokens=60, temperature=0))
    first = await long_runner.__anext__()  # it is decoding now
    late = await engine.submit(ids(engine, QUESTIONS[1]), greedy).text()
    rest = await long_runner.text()
    assert late == expected and first + rest


async def test_same_seed_same_output_and_other_seed_differs(engine) -> None:  # type: ignore[no-untyped-def]
    def params(seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=30, temperature=1.0, top_p=0.95, top_k=40, seed=seed)
    prompt = ids(engine, "Tell me a story about a dragon.")
    a, b, c = await asyncio.gather(*[engine.submit(prompt, params(s)).text() for s in (7, 7, 8)])
    assert a == b
    assert a != c


async def test_max_tokens_ends_with_length_and_counts_usage(engine) -> None:  # type: ignore[no-untyped-def]
    # a prompt whose answer is long whatever the numerics: the cut is max_tokens, not the model's end
    prompt = ids(engine, "Write a long essay about the ocean.")
    stream = engine.submit(prompt, SamplingParams(max_tokens=5, temperature=0))
    await stream.text()
    assert stream.finished.finish_reason == "length"
    assert stream.finished.usage.completion_tokens == 5
    assert stream.finished.usage.prompt_tokens == stream.num_prompt_tokens


async def test_stop_sequence_ends_the_answer_before_the_stop_text(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = ids(engine, "Count from one to ten in digits, separated by commas.")
    full = await engine.submit(prompt, SamplingParams(max_tokens=40, temperature=0)).text()
    assert "5" in full
    stream = engine.submit(prompt, SamplingParams(max_tokens=40, temperature=0, stop=("5",)))
    cut = await stream.text()
    assert cut == full[: full.index("5")]
    assert stream.finished.finish_reason == "stop"


async def test_an_abort_frees_the_batch_slot_within_a_step(engine) -> None:  # type: ignore[no-untyped-def]
    stream = engine.submit(ids(engine, "Write a long essay about the ocean."), SamplingParams(max_tokens=500))
    await stream.__anext__()
    assert engine.num_running == 1
    await stream.aclose()
    finished = await asyncio.wait_for(stream.wait_finished(), 5)
    assert finished.finish_reason == "abort"
    assert finished.usage.completion_tokens < 500
    assert engine.num_running == 0 and engine.block_manager.usage == 0  # its blocks are back


async def test_a_failing_step_fails_its_requests_not_the_worker(engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated device error")

    monkeypatch.setattr(engine.runner, "execute", boom)
    stream = engine.submit(ids(engine, "hello"), SamplingParams(max_tokens=5))
    with pytest.raises(GenerationFailed):
        await stream.text()
    monkeypatch.undo()
    assert engine.block_manager.usage == 0
    assert await engine.submit(ids(engine, "hello"), SamplingParams(max_tokens=5, temperature=0)).text()


async def test_a_stop_string_completed_by_the_last_tokens_still_stops(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = ids(engine, "Say exactly: I like green apples.")
    full = await engine.submit(prompt, SamplingParams(max_tokens=12, temperature=0)).text()
    words = full.split()
    assert len(words) >= 2
    # a stop string that is the answer's ending: cut even when it completes on the final token
    tail = full.rstrip()[-3:]
    stream = engine.submit(prompt, SamplingParams(max_tokens=12, temperature=0, stop=(tail,)))
    cut = await stream.text()
    assert cut == full[: full.index(tail)] and stream.finished.finish_reason == "stop"
    # text that only starts a stop string is released at the end, not lost
    never = full.rstrip()[-2:] + "\u2603"
    kept = await engine.submit(prompt, SamplingParams(max_tokens=12, temperature=0, stop=(never,))).text()
    assert kept == full


async def test_requests_that_leave_out_of_order_keep_the_others_answers(fp32_engine) -> None:  # type: ignore[no-untyped-def]
    """Short requests leave a running batch while long ones go on past many KV blocks:
    the long ones continue exactly as if alone, and every block comes back."""
    engine = fp32_engine
    long = SamplingParams(max_tokens=300, temperature=0)
    prompts = [ids(engine, "Write a long story about a dragon and a knight."),
               ids(engine, "Write a long essay about the history of Rome.")]
    alone = [await engine.submit(p, long).text() for p in prompts]
    streams = [engine.submit(ids(engine, "Say hi."), SamplingParams(max_tokens=2, temperature=0))]
    streams += [engine.submit(p, long) for p in prompts]
    streams.append(engine.submit(ids(engine, "Name a color."), SamplingParams(max_tokens=280, temperature=0)))
    texts = await asyncio.gather(*[s.text() for s in streams])
    assert list(texts[1:3]) == alone
    assert all(s.finished.finish_reason in ("stop", "length") for s in streams)
    assert engine.block_manager.usage == 0


async def test_a_chat_turn_reuses_the_history_computed_by_the_previous_turn(engine) -> None:  # type: ignore[no-untyped-def]
    """Turn 2 resends turn 1 (question and answer): only the new message is computed."""
    greedy = SamplingParams(max_tokens=40, temperature=0)
    history = [{"role": "user", "content": "Name a large animal that lives in the sea."}]
    first = engine.submit(ids_of(engine, history), greedy)
    answer = await first.text()
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "How big does it get?"}]
    prompt = ids_of(engine, history)
    second = engine.submit(prompt, greedy)
    assert await second.text()
    turn1_tokens = first.num_prompt_tokens + first.finished.usage.completion_tokens
    # everything of turn 1 but its last partial block (and the answer's re-tokenized end) came from the cache
    assert second.finished.usage.cached_tokens >= turn1_tokens - 2 * 16
    assert second.finished.usage.cached_tokens < len(prompt)


def ids_of(engine, messages: list[dict[str, str]]) -> list[int]:  # type: ignore[no-untyped-def]
    return list(engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])


async def test_when_kv_memory_runs_out_requests_are_preempted_and_still_answer_exactly() -> None:
    """A KV cache far smaller than the concurrent requests need: the newest are preempted,
    recomputed later, and every answer is the one it gets alone (fp32: no rounding noise)."""
    import dataclasses

    from inference import Engine, pool
    from inference.loader import load_model
    from inference.metrics import PREEMPTIONS

    spec = builtin_spec()
    settings = dataclasses.replace(pool.settings, dtype="float32", kv_cache_tokens=512, prefix_caching=False,
                                   weight_kernels=False)
    engine = Engine(spec, lambda: load_model(spec, settings), settings)
    try:
        long = SamplingParams(max_tokens=150, temperature=0)
        prompts = [ids(engine, q) for q in ("Write a long story about a dragon.", "Write a long essay about Rome.",
                                            "Describe the ocean at night in detail.")]
        alone = [await engine.submit(p, long).text() for p in prompts]
        preempted = PREEMPTIONS.labels(engine.name)
        before = preempted._value.get()
        streams = [engine.submit(p, long) for p in prompts]
        together = await asyncio.gather(*[s.text() for s in streams])
        assert list(together) == alone
        assert preempted._value.get() > before  # memory did run out
        assert engine.block_manager.usage == 0
    finally:
        engine.shutdown()


async def test_min_tokens_keeps_an_answer_going_past_its_natural_end(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = ids(engine, "Say hello.")
    short = engine.submit(prompt, SamplingParams(max_tokens=120, temperature=0))
    natural = await short.text()
    assert short.finished.finish_reason == "stop", "use a prompt the model answers briefly"
    n = short.finished.usage.completion_tokens + 30
    stream = engine.submit(prompt, SamplingParams(max_tokens=120, min_tokens=n, temperature=0))
    longer = await stream.text()
    assert stream.finished.usage.completion_tokens >= n
    assert longer.startswith(natural) and len(longer) > len(natural)
    # a stop string the answer reaches early does not end it before min_tokens either
    word = natural.split()[0]
    cut = engine.submit(prompt, SamplingParams(max_tokens=120, min_tokens=n, temperature=0, stop=(word,)))
    await cut.text()
    assert cut.finished.usage.completion_tokens >= n
