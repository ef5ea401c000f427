"""Fixtures of the inference tests."""
from __future__ import annotations

import dataclasses

import pytest

from inference import pool
from inference.engine import Engine
from inference.loader import load_model
from tests.support import builtin_spec


@pytest.fixture(scope="session")
def fp32_engine():  # type: ignore[no-untyped-def]
    """The default model on an engine of its own in float32 (dense), where a row's
    numbers do not depend on the rows batched with it: for exact-equality tests of
    batching logic. A small KV cache, so long answers cross many blocks."""
    spec = builtin_spec()
    settings = dataclasses.replace(pool.settings, dtype="float32", kv_cache_tokens=4096, weight_kernels=False)
    engine = Engine(spec, load_model(spec, settings), settings)
    yield engine
    engine.shutdown()
