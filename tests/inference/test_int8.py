"""The 8-bit catalog entry is real: quantized weights, sensible answers."""
from __future__ import annotations

import pytest
import torch

from inference import pool
from inference.quant import Int8Linear
from inference.sequence import SamplingParams
from tests.support import MODEL, builtin_spec

pytestmark = pytest.mark.model


async def test_the_int8_entry_runs_with_8_bit_weights_and_answers() -> None:
    engine = await pool.aget(builtin_spec(f"{MODEL}-int8"))
    if engine.loaded.dtype == torch.bfloat16:  # a CPU with native bf16: weight-only int8 kernels
        assert engine.loaded.quantization == "int8 weight-only"
        assert all(isinstance(lin.kernel, Int8Linear) for lin in engine.loaded.model.linears())
    else:  # elsewhere the kernels lose to dense fp32, and the catalog says so
        assert "need native bf16" in engine.loaded.quantization
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               add_generation_prompt=True)["input_ids"]
    answer = await engine.submit(list(ids), SamplingParams(max_tokens=16, temperature=0)).text()
    assert "Paris" in answer


def test_dense_rows_are_padded_to_a_few_sizes_and_the_padding_never_shows() -> None:
    from inference.quant import bucket_rows, dense_linear

    sizes = {bucket_rows(m) for m in range(1, 2049)}
    assert len(sizes) < 64  # not 2048 oneDNN kernels kept for good
    assert all(m <= bucket_rows(m) <= max(m, m * 5 // 4) for m in range(1, 2049))
    weight = torch.randn(48, 64).to(torch.bfloat16)
    for m in (1, 32, 33, 47, 100):
        x = torch.randn(m, 64).to(torch.bfloat16)
        out = dense_linear(x, weight)
        assert out.shape == (m, 48)
        torch.testing.assert_close(out, torch.nn.functional.linear(x, weight))


def test_the_candidate_head_gives_the_8_bit_logits_of_each_rows_likely_tokens() -> None:
    from inference.quant import CandidateHead

    torch.manual_seed(0)
    head = CandidateHead(torch.randn(4096, 64) * 0.1, torch.bfloat16, candidates=16)
    x = torch.randn(3, 64).to(torch.bfloat16)
    with torch.inference_mode():
        got = head(x)
        top = head.fast(x).float().topk(16, dim=-1).indices  # the candidates: likeliest by the 4-bit logits
    exact = x.float() @ (head.int8.qweight.float() * head.int8.scales.float()[:, None]).T  # 8-bit weights, in fp32
    assert got.shape == (3, 4096) and got.dtype == torch.float32
    torch.testing.assert_close(got.gather(1, top), exact.gather(1, top))
    assert torch.equal(got.argmax(-1), exact.argmax(-1))  # greedy picks what the 8-bit weights pick
    many = torch.randn(head.max_candidate_rows + 1, 64).to(torch.bfloat16)
    with torch.inference_mode():  # more rows than the kernels serve: the exact head throughout
        torch.testing.assert_close(head(many), head.exact(many).float())
