"""Inference settings: one place for defaults, read from the environment strictly."""
from __future__ import annotations

from pathlib import Path

import pytest

from inference import InferenceSettings


def test_unset_variables_keep_the_defaults_and_set_ones_are_parsed() -> None:
    s = InferenceSettings.from_env({"INFERENCE_KV_CACHE_TOKENS": "4096", "INFERENCE_PREFIX_CACHING": "off",
                                    "MODEL_CACHE_DIR": "/tmp/m", "INFERENCE_DEVICE": "cuda:1"})
    assert (s.kv_cache_tokens, s.prefix_caching, s.model_cache_dir, s.device) == (4096, False, Path("/tmp/m"), "cuda:1")
    assert s.max_batch_size == InferenceSettings().max_batch_size


def test_a_caller_can_give_its_own_defaults() -> None:
    assert InferenceSettings.from_env({}, model_cache_dir=Path("var/models")).model_cache_dir == Path("var/models")


@pytest.mark.parametrize("name, value", [
    ("INFERENCE_MAX_BATCH_SIZE", "0"), ("INFERENCE_MAX_BATCH_SIZE", "lots"), ("INFERENCE_PREFIX_CACHING", "maybe"),
    ("INFERENCE_DTYPE", "int3"), ("INFERENCE_DEVICE", "tpu"), ("INFERENCE_KV_CACHE_TOKENS", "10"),
])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        InferenceSettings.from_env({name: value})
