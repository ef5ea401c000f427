"""Seed the catalog from inference's built-in entries (admins edit it afterwards)."""
from __future__ import annotations

from typing import Any

from django.db import migrations


def seed(apps: Any, schema_editor: Any) -> None:
    from chat.seed import seed_catalog

    seed_catalog(apps.get_model("chat", "CatalogEntry"))


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
