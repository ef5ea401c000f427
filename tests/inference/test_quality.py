"""The fast path keeps the model's answers: compared with a float32 reference.

The reference is transformers' ``LlamaForCausalLM`` in float32 on the same weights (the
dequantized GGUF). The engine's plan on this machine (bf16 activations and weight-only
int4/int8 kernels where the CPU has native bf16, else fp32) must keep perplexity within
2% and greedy answers mostly identical. Steps are run one token at a time, so the
weight-only decode kernels are what is measured, as in real decoding.
"""
from __future__ import annotations

import math

import pytest
import torch

from inference import pool
from inference.block_manager import BlockManager
from inference.loader import checkpoint_dir, load_model
from inference.models import Builder, DecoderModel, StateDict, build
from inference.quant import make_linear
from inference.runner import ModelRunner
from inference.scheduler import ScheduledSeq, SchedulerOutput
from inference.sequence import SamplingParams, Sequence
from tests.support import builtin_spec

pytestmark = pytest.mark.model

PASSAGE = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg, a goldsmith "
    "from Mainz, combined movable metal type, oil-based ink and a wooden screw press into a system that could "
    "produce books far faster than scribes. Before this, most books in Europe were copied by hand, usually in "
    "monasteries, and a single Bible could take a scribe more than a year. Gutenberg's press spread quickly: by "
    "1500, printing shops operated in more than two hundred cities, and millions of volumes had been printed. "
    "Cheaper books helped literacy grow, allowed scientists to share results accurately, and made it possible "
    "for new religious and political ideas to travel across the continent within weeks rather than decades. "
    "Historians often describe the printing press as one of the inventions that shaped the modern world."
)
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Name three primary colors.",
    "What is 12 times 12?",
    "Give me a tip for sleeping better.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat in two sentences.",
]


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    directory = checkpoint_dir(builtin_spec(), pool.settings)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model


@pytest.fixture(scope="module")
def fast():  # type: ignore[no-untyped-def]
    """The model exactly as the engine serves it on this machine."""
    return load_model(builtin_spec(), pool.settings)


class Stepper:
    """Drives one sequence through the paged runner, a chosen number of tokens per step."""

    def __init__(self, model: DecoderModel, ids: list[int]) -> None:
        self.bm = BlockManager(num_blocks=len(ids) // 16 + 4, block_size=16, enable_prefix_caching=False)
        self.runner = ModelRunner(model, self.bm.num_blocks, 16, model.dtype)
        self.seq = Sequence("q", list(ids), SamplingParams(), max_model_len=8192)
        self.bm.admit(self.seq, [])
        self.bm.grow(self.seq, len(ids))

    def run(self, start: int, end: int) -> torch.Tensor:
        """Compute positions ``start..end-1``; logits ``[V]`` predicting position ``end``."""
        view = Sequence("q", self.seq.all_token_ids[:end], SamplingParams(), max_model_len=8192)
        view.block_table = self.seq.block_table
        _, logits = self.runner.execute(SchedulerOutput([ScheduledSeq(view, start, end)]))
        return logits[0]


def decode_logits(model: DecoderModel, ids: list[int]) -> torch.Tensor:
    """Logits ``[len - 1, V]`` predicting tokens 1.., one token per step (decode)."""
    stepper = Stepper(model, ids)
    return torch.stack([stepper.run(pos, pos + 1) for pos in range(len(ids) - 1)])


def perplexity(logits: torch.Tensor, targets: list[int]) -> float:
    nll = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))
    return math.exp(nll.item())


def test_the_decoder_matches_transformers_logits_on_the_same_weights(reference) -> None:  # type: ignore[no-untyped-def]
    """Our decoder in fp32 is the same function as transformers' Llama, whether tokens
    come one per step or as prompt chunks with and without a past."""
    from safetensors.torch import load_file

    directory = checkpoint_dir(builtin_spec(), pool.settings)
    state = load_file(str(directory / "model.safetensors"))
    ours = build(Builder(reference.config, StateDict(state), torch.float32, "cpu",
                         lambda w, kind: make_linear(w, kind, torch.float32)))
    ids = reference_tokens(PASSAGE)[:96]
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0]  # [S, V]: row i predicts token i + 1
    got = decode_logits(ours, ids)
    assert torch.allclose(got, expected[:-1], atol=2e-3, rtol=1e-3), (got - expected[:-1]).abs().max()
    stepper = Stepper(ours, ids)
    first = stepper.run(0, 48)  # a chunk without a past: causal attention
    second = stepper.run(48, 96)  # a chunk attending to the first
    assert torch.allclose(first, expected[47], atol=2e-3, rtol=1e-3)
    assert torch.allclose(second, expected[95], atol=2e-3, rtol=1e-3)


_TOKENIZER = None


def reference_tokens(text: str) -> list[int]:
    global _TOKENIZER
    if _TOKENIZER is None:
        from transformers import AutoTokenizer

        _TOKENIZER = AutoTokenizer.from_pretrained(checkpoint_dir(builtin_spec(), pool.settings))
    return list(_TOKENIZER(text)["input_ids"])


def test_perplexity_of_the_fast_path_stays_within_2_percent_of_float32(reference, fast) -> None:  # type: ignore[no-untyped-def]
    ids = reference_tokens(PASSAGE)
    with torch.no_grad():
        ref_ppl = perplexity(reference(torch.tensor([ids])).logits[0, :-1], ids[1:])
    fast_ppl = perplexity(decode_logits(fast.model, ids), ids[1:])
    print(f"perplexity: float32 {ref_ppl:.3f}, served ({fast.quantization}, {fast.dtype}) {fast_ppl:.3f}")
    assert abs(fast_ppl - ref_ppl) / ref_ppl <= 0.02


def test_greedy_answers_agree_with_float32_on_most_prompts(reference, fast) -> None:  # type: ignore[no-untyped-def]
    tok = fast.tokenizer
    agree = 0
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        ids = list(tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
        with torch.no_grad():
            generated = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
        expected = generated[0, len(ids):].tolist()
        got = greedy(fast.model, ids, 32, fast.eos_token_ids)
        expected = [t for t in expected if t not in fast.eos_token_ids][: len(got)] if len(got) < 32 else expected
        agree += got == expected[: len(got)]
    print(f"greedy agreement: {agree}/{len(PROMPTS)}")
    assert agree >= len(PROMPTS) * 3 // 4


def greedy(model: DecoderModel, ids: list[int], n: int, eos: frozenset[int]) -> list[int]:
    bm = BlockManager(num_blocks=(len(ids) + n) // 16 + 4, block_size=16, enable_prefix_caching=False)
    runner = ModelRunner(model, bm.num_blocks, 16, model.dtype)
    seq = Sequence("g", ids, SamplingParams(temperature=0), max_model_len=8192)
    bm.admit(seq, [])
    out: list[int] = []
    while len(out) < n:
        start = seq.num_computed_tokens
        bm.grow(seq, seq.num_tokens)
        _, logits = runner.execute(SchedulerOutput([ScheduledSeq(seq, start, seq.num_tokens)]))
        seq.num_computed_tokens = seq.num_tokens
        token = int(logits[0].argmax())
        if token in eos:
            break
        out.append(token)
        seq.append_token(token)
    return out
