"""``manage.py catalog add|set|list|remove``: edit the model catalog from a script (the admin
edits the same rows). Each prints what it changed and exits non-zero with a message on bad input.

    manage.py catalog add NAME --source openai:http://127.0.0.1:8001/v1 --upstream-model ID \\
        --context-length 4096 --max-output-tokens 1024 [--api-key-env VAR] [--default]
    manage.py catalog set NAME [--source ...] [--add-upstream URL] [--remove-upstream URL] [...]
    manage.py catalog list
    manage.py catalog remove NAME
"""
from __future__ import annotations

import argparse
import re
from typing import Any
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from chat.catalog import state
from chat.models import CatalogEntry

SOURCE_KINDS = ("package", "hf", "path", "openai", "assembled")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def upstream_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CommandError(f"{value!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
    return value.rstrip("/")


def check_source(value: str) -> str:
    kind, _, ref = value.partition(":")
    if kind not in SOURCE_KINDS or not ref:
        raise CommandError(f"--source {value!r}: expected one of {', '.join(k + ':...' for k in SOURCE_KINDS)}")
    if kind == "openai":
        return "openai:" + upstream_url(ref)
    return value


def serving(entry: CatalogEntry) -> str:
    """Which path serves a local entry (``native: llama``, ``transformers: gpt2``); refuses one
    that neither can run, or whose weights are not on this server, with the reason."""
    from inference import describe_source, pool

    try:
        return describe_source(entry.to_spec(), pool.settings)
    except FileNotFoundError as exc:
        raise CommandError(f"--source {entry.source!r}: weights not found ({exc})") from None
    except (ValueError, ImportError) as exc:
        raise CommandError(f"--source {entry.source!r} cannot be served: {exc}") from None


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


class Command(BaseCommand):
    help = "Add, change, list or remove model catalog entries (local weights or remote OpenAI-compatible servers)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)

        def entry_options(p: argparse.ArgumentParser, required: bool) -> None:
            p.add_argument("name")
            p.add_argument("--source", required=required, help="package:..., hf:..., path:... or openai:<URL>/v1")
            p.add_argument("--upstream-model", help="the model's name at the upstream (openai: sources)")
            p.add_argument("--context-length", type=positive, required=required)
            p.add_argument("--max-output-tokens", type=positive, required=required)
            p.add_argument("--api-key-env", help="environment variable holding the upstream's API key")
            p.add_argument("--description")
            p.add_argument("--precision", choices=[c.value for c in CatalogEntry.Precision])
            p.add_argument("--default", action="store_true", help="make it the catalog's default model")

        add = sub.add_parser("add", help="add an entry")
        entry_options(add, required=True)
        add.add_argument("--add-upstream", action="append", default=[], help="another URL of the same model")
        change = sub.add_parser("set", help="change an entry")
        entry_options(change, required=False)
        change.add_argument("--add-upstream", action="append", default=[], help="add a URL of the same model")
        change.add_argument("--remove-upstream", action="append", default=[], help="remove one of its URLs")
        change.add_argument("--disable", action="store_true")
        change.add_argument("--enable", action="store_true")
        sub.add_parser("list", help="one line per entry: name, source, state")
        remove = sub.add_parser("remove", help="remove an entry")
        remove.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['action']}")(options)

    def do_list(self, options: dict[str, Any]) -> None:
        for entry in CatalogEntry.objects.order_by("name"):
            upstreams = [entry.source, *(f"openai:{u}" for u in entry.extra_upstreams or [])]
            flags = (" [default]" if entry.is_default else "") + ("" if entry.is_enabled else " [disabled]")
            self.stdout.write(f"{entry.name}  {', '.join(upstreams)}  {state(entry)}{flags}")

    def do_remove(self, options: dict[str, Any]) -> None:
        deleted, _ = CatalogEntry.objects.filter(name=options["name"]).delete()
        if not deleted:
            raise CommandError(f"no catalog entry {options['name']!r}")
        self.stdout.write(f"removed {options['name']}")

    def do_add(self, options: dict[str, Any]) -> None:
        if CatalogEntry.objects.filter(name=options["name"]).exists():
            raise CommandError(f"{options['name']!r} is already in the catalog (use 'catalog set')")
        entry = CatalogEntry(name=options["name"])
        self._apply(entry, options)
        self.stdout.write(f"added {self._describe(entry)}")

    def do_set(self, options: dict[str, Any]) -> None:
        entry = CatalogEntry.objects.filter(name=options["name"]).first()
        if entry is None:
            raise CommandError(f"no catalog entry {options['name']!r} (use 'catalog add')")
        if options.get("disable") and options.get("enable"):
            raise CommandError("--enable and --disable go one at a time")
        if options.get("disable"):
            entry.is_enabled = False
        if options.get("enable"):
            entry.is_enabled = True
        self._apply(entry, options)
        self.stdout.write(f"changed {self._describe(entry)}")

    def _apply(self, entry: CatalogEntry, options: dict[str, Any]) -> None:
        if not options["name"].strip() or len(options["name"]) > 200:
            raise CommandError("NAME must be 1-200 characters")
        if options.get("source"):
            entry.source = check_source(options["source"])
        for field in ("upstream_model", "description", "precision"):
            if options.get(field) is not None:
                setattr(entry, field, options[field])
        for field in ("context_length", "max_output_tokens"):
            if options.get(field) is not None:
                setattr(entry, field, options[field])
        if options.get("api_key_env") is not None:
            if options["api_key_env"] and not ENV_NAME.match(options["api_key_env"]):
                raise CommandError(f"--api-key-env {options['api_key_env']!r} is not an environment variable name")
            entry.api_key_env = options["api_key_env"]
        extra = list(entry.extra_upstreams or [])
        for url in options.get("add_upstream") or []:
            url = upstream_url(url)
            if url not in extra and f"openai:{url}" != entry.source:
                extra.append(url)
        for url in options.get("remove_upstream") or []:
            url = url.rstrip("/")
            if url in extra:
                extra.remove(url)
            elif f"openai:{url}" == entry.source and extra:
                entry.source = f"openai:{extra.pop(0)}"  # the next one becomes the first
            else:
                raise CommandError(f"{url!r} is not an extra upstream of {entry.name}")
        if extra and not entry.source.startswith("openai:"):
            raise CommandError("--add-upstream is for openai: sources")
        entry.extra_upstreams = extra
        if not entry.source.startswith("openai:") and (entry.upstream_model or entry.api_key_env):
            raise CommandError("--upstream-model and --api-key-env are for openai: sources")
        if options.get("default"):
            entry.is_default = True
        if options.get("source") and not entry.source.startswith("openai:"):
            entry.serving = serving(entry)
        with transaction.atomic():
            entry.save()

    @staticmethod
    def _describe(entry: CatalogEntry) -> str:
        parts = [entry.name, entry.source]
        parts += [f"+{u}" for u in entry.extra_upstreams or []]
        if entry.upstream_model:
            parts.append(f"upstream model {entry.upstream_model}")
        if entry.api_key_env:
            parts.append(f"key from ${entry.api_key_env}")
        parts.append(f"context {entry.context_length}, output {entry.max_output_tokens}")
        if getattr(entry, "serving", ""):
            parts.append(f"served by {entry.serving}")
        if entry.is_default:
            parts.append("default")
        if not entry.is_enabled:
            parts.append("disabled")
        return " | ".join(parts)
