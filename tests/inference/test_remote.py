"""The remote engine's upstream request: the caller's sampling settings reach the upstream."""
from __future__ import annotations

from inference.catalog import ModelSpec
from inference.remote import RemoteEngine
from inference.sequence import SamplingParams


def remote() -> RemoteEngine:
    return RemoteEngine(ModelSpec(name="@cf/test/remote", source="openai:http://127.0.0.1:9/v1", upstream_model="up"))


def test_min_tokens_is_passed_on_to_the_upstream_only_when_set() -> None:
    path, body = remote().body(SamplingParams(max_tokens=50, min_tokens=20), "hi", None, raw=False)
    assert path == "/chat/completions" and body["model"] == "up"
    assert (body["max_tokens"], body["min_tokens"]) == (50, 20)
    _, plain = remote().body(SamplingParams(max_tokens=50), "hi", None, raw=True)
    assert "min_tokens" not in plain and plain["prompt"] == "hi"
