"""Each family file is the same function as transformers' model of that family.

A tiny model with random weights is made from transformers' own config class; our loader's
builder reads the same weights. Logits are compared (float32; tolerances below) for a
prompt chunk, for decode steps on the paged cache (past the sliding window where the family
has one), for a row batched beside another sequence, and after a prefix-cache hit; on torch's
ops and on the native CPU kernels."""
from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch

from inference.block_manager import BlockManager
from inference.kernels import load_native
from inference.models import FAMILIES, Builder, DecoderModel, StateDict, build
from inference.quant import make_linear
from inference.runner import ModelRunner
from inference.scheduler import ScheduledSeq, SchedulerOutput
from inference.sequence import SamplingParams, Sequence

ATOL, RTOL = 2e-4, 1e-3  # float32 on both sides; logits of a random model are O(1)
BLOCK = 8
WINDOW = 12  # shorter than the prompts, so sliding layers drop keys
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)


def tiny_config(model_type: str) -> Any:
    import transformers as tf

    if model_type == "llama":
        return tf.LlamaConfig(**TINY, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                       "original_max_position_embeddings": 64})
    if model_type == "mistral":
        return tf.MistralConfig(**TINY, sliding_window=WINDOW)
    if model_type == "qwen2":
        return tf.Qwen2Config(**TINY)
    if model_type == "qwen3":
        return tf.Qwen3Config(**TINY, head_dim=16)
    if model_type == "phi3":
        return tf.Phi3Config(**{**TINY, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                           "partial_rotary_factor": 0.5}},
                             pad_token_id=0)
    if model_type == "gemma2":
        return tf.Gemma2Config(**TINY, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
                               attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
    if model_type == "gemma3_text":
        return tf.Gemma3TextConfig(**{**TINY, "num_hidden_layers": 4}, head_dim=16, sliding_window=WINDOW,
                                   query_pre_attn_scalar=24, sliding_window_pattern=2,
                                   layer_types=["sliding_attention", "full_attention"] * 2)
    raise KeyError(model_type)


FAMILY_TYPES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text"]


@pytest.fixture(scope="module")
def native(tmp_path_factory):  # type: ignore[no-untyped-def]
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return None
    return load_native(tmp_path_factory.mktemp("kernels"))


def reference_and_ours(model_type: str, native: Any, use_native: bool) -> tuple[Any, DecoderModel]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(model_type)
    config._attn_implementation = "eager"
    reference = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases and norm weights, so they count
        for name, p in reference.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0, 0.5 if "norm" in name else 0.1)
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    if use_native and native is None:
        pytest.skip("no C compiler: the native kernels are not built")
    builder = Builder(reference.config, StateDict(state), torch.float32, "cpu",
                      lambda w, kind: make_linear(w, kind, torch.float32), native=native if use_native else None)
    return reference, build(builder)


class Driver:
    """Drives sequences through the real runner and block manager (prefix caching on)."""

    def __init__(self, model: DecoderModel) -> None:
        self.bm = BlockManager(num_blocks=64, block_size=BLOCK, enable_prefix_caching=True)
        self.runner = ModelRunner(model, self.bm.num_blocks, BLOCK, torch.float32)

    def admit(self, ids: list[int]) -> Sequence:
        seq = Sequence(f"s{id(ids)}", list(ids), SamplingParams(), max_model_len=256)
        hits, _ = self.bm.num_blocks_to_admit(seq)
        self.bm.admit(seq, hits)
        return seq

    def step(self, work: list[tuple[Sequence, int]]) -> list[torch.Tensor]:
        """Compute each ``(seq, end)``: positions from its computed count to ``end``; logits of each."""
        scheduled = []
        for seq, end in work:
            self.bm.grow(seq, end)
            scheduled.append(ScheduledSeq(seq, seq.num_computed_tokens, end))
        finishing, logits = self.runner.execute(SchedulerOutput(scheduled))
        for seq, end in work:
            seq.num_computed_tokens = end
            self.bm.register_computed(seq)
        order = {id(s.seq): i for i, s in enumerate(finishing)}
        return [logits[order[id(seq)]] for seq, _ in work]


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.allclose(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("path", ["torch", "native"])
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_the_family_computes_what_transformers_computes(model_type: str, path: str, native: Any) -> None:
    reference, ours = reference_and_ours(model_type, native, path == "native")
    torch.manual_seed(1)
    ids = torch.randint(1, 128, (48,)).tolist()
    other = torch.randint(1, 128, (30,)).tolist()
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits[0]  # [S, V]: row i predicts token i + 1
        want_other = reference(torch.tensor([other])).logits[0]
    driver = Driver(ours)
    seq = driver.admit(ids[:24])
    (prompt,) = driver.step([(seq, 24)])  # a prompt chunk (2 blocks past the window)
    assert close(prompt, want[23]), f"prompt logits differ by {(prompt - want[23]).abs().max():.2e}"
    for pos in range(24, 32):  # decode on the paged cache, one token a step
        seq.append_token(ids[pos])
        (step,) = driver.step([(seq, pos + 1)])
        assert close(step, want[pos]), f"decode at {pos} differs by {(step - want[pos]).abs().max():.2e}"
    # a chunk of another sequence in the same step as this one's decodes
    beside = driver.admit(other[:20])
    seq.append_token(ids[32])
    mine, theirs = driver.step([(seq, 33), (beside, 20)])
    assert close(mine, want[32]) and close(theirs, want_other[19])
    for pos in range(20, 30):  # then both decode together
        beside.append_token(other[pos])
        seq.append_token(ids[pos + 13])
        mine, theirs = driver.step([(seq, pos + 14), (beside, pos + 1)])
        assert close(mine, want[pos + 13]) and close(theirs, want_other[pos])
    # a new sequence sharing the first 36 tokens starts from the 4 cached blocks of 8
    again = driver.admit(ids[:36])
    assert again.num_computed_tokens == 32
    (hit,) = driver.step([(again, 36)])
    assert close(hit, want[35]), f"after a prefix hit: {(hit - want[35]).abs().max():.2e}"


def test_every_registered_family_has_a_test() -> None:
    assert {t for t in FAMILIES if t != "gemma3"} == set(FAMILY_TYPES)


def test_an_architecture_without_a_family_file_is_refused_with_its_name() -> None:
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="gpt2"):
        build(Builder(GPT2Config(n_layer=1, n_embd=32, n_head=2), StateDict({}), torch.float32, "cpu",
                      lambda w, kind: make_linear(w, kind, torch.float32)))
