"""Sampling is per row: one request's numbers never fail or change another's."""
from __future__ import annotations

import pytest
import torch

from inference import sampling
from inference.sequence import InvalidSamplingParams, SamplingParams, Sequence


def seq(params: SamplingParams) -> Sequence:
    return Sequence("r", [1, 2, 3], params, max_model_len=64)


def test_a_row_whose_sampling_fails_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(3, 50)
    rows = [seq(SamplingParams(temperature=0)), seq(SamplingParams(temperature=1.0, seed=1)),
            seq(SamplingParams(temperature=1.0, seed=2))]
    real = sampling.sample_row

    def flaky(row_logits, s, g):  # type: ignore[no-untyped-def]
        if s is rows[1]:
            raise RuntimeError("device error in this row")
        return real(row_logits, s, g)

    monkeypatch.setattr(sampling, "sample_row", flaky)
    out = sampling.sample(logits, rows, [None, sampling.make_generator(1, "cpu"), sampling.make_generator(2, "cpu")])
    assert out[0] == int(logits[0].argmax())
    assert isinstance(out[1], RuntimeError)
    assert isinstance(out[2], int)


@pytest.mark.parametrize("field, value", [
    ("temperature", float("nan")), ("temperature", float("inf")), ("top_p", float("nan")),
    ("repetition_penalty", float("-inf")), ("frequency_penalty", 3.0), ("max_tokens", 0), ("seed", -1),
])
def test_numbers_that_would_break_the_maths_are_refused(field: str, value: float) -> None:
    with pytest.raises(InvalidSamplingParams) as exc:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert exc.value.field == field


def test_values_that_underflow_are_read_at_their_limit() -> None:
    p = SamplingParams(temperature=1e-300, top_p=1e-300, repetition_penalty=1e-300)
    assert p.is_greedy and p.top_p > 0 and p.repetition_penalty >= 1e-2
    logits = torch.randn(1, 50)
    first = sampling.sample(logits, [seq(p)], [None])
    assert first == sampling.sample(logits, [seq(p)], [None]) and isinstance(first[0], int)  # greedy, finite


def test_forbid_ending_masks_only_the_rows_that_are_too_short() -> None:
    logits = torch.zeros(3, 10)
    logits[:, 2] = 5.0  # token 2: end-of-sequence, the likeliest everywhere
    sampling.forbid_ending(logits, [(0, [2, 7], False)])
    assert logits[0, 2] == float("-inf") and logits[0, 7] == float("-inf")
    assert torch.isfinite(logits[1:]).all()
    assert sampling.sample(logits, [seq(SamplingParams(temperature=0))] * 3, [None] * 3)[1:] == [2, 2]
    # a complete grammar allows only the end: that row keeps it
    guided = torch.full((1, 10), float("-inf"))
    guided[0, 2] = 0.0
    sampling.forbid_ending(guided, [(0, [2], True)])
    assert guided[0, 2] == 0.0


def test_min_tokens_is_checked_and_never_above_max_tokens() -> None:
    with pytest.raises(InvalidSamplingParams) as exc:
        SamplingParams(min_tokens=-1)
    assert exc.value.field == "min_tokens"
    with pytest.raises(InvalidSamplingParams) as exc:
        SamplingParams(max_tokens=5, min_tokens=9)
    assert exc.value.field == "min_tokens"
