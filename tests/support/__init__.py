"""What the tests share: the model they run, how they talk to the API in-process, how they
read Server-Sent Events, and how they start real servers.

Plain helpers live here; fixtures stay in the ``conftest.py`` that serves them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inference import ModelSpec

MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"
"""The catalog's default entry: the small model every integration test runs."""


def builtin_spec(name: str = MODEL) -> ModelSpec:
    """The built-in catalog's entry called ``name``."""
    from inference.catalog import BUILTIN_CATALOG

    return next(s for s in BUILTIN_CATALOG if s.name == name)
