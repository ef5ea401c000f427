"""Seed the catalog from inference's built-in entries (used by a migration and tests)."""
from __future__ import annotations

from typing import Any

from inference import BUILTIN_CATALOG, DEFAULT_MODEL


def seed_catalog(catalog_entry_model: Any) -> None:
    """Create missing built-in entries; existing rows (admin edits) are left alone."""
    for spec in BUILTIN_CATALOG:
        catalog_entry_model.objects.get_or_create(
            name=spec.name,
            defaults={
                "description": spec.description,
                "source": spec.source,
                "precision": spec.precision,
                "context_length": spec.context_length,
                "max_output_tokens": spec.max_output_tokens,
                "is_default": spec.name == DEFAULT_MODEL,
            },
        )
