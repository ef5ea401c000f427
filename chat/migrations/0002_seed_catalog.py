"""Seed the catalog from inference's built-in entries (admins edit it afterwards)."""
from __future__ import annotations

from typing import Any

from django.db import migrations


def seed(apps: Any, schema_editor: Any) -> None:
    from inference.catalog import BUILTIN_CATALOG, DEFAULT_MODEL

    CatalogEntry = apps.get_model("chat", "CatalogEntry")
    for spec in BUILTIN_CATALOG:
        CatalogEntry.objects.get_or_create(
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


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
