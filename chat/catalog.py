"""Catalog rows to engines: which entry a request names, whether it can serve, which
models to load at start."""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from inference import (
    BUILTIN_CATALOG,
    DEFAULT_MODEL,
    Engine,
    ModelNotFound,
    ModelSpec,
    ModelUnavailable,
    RemoteEngine,
    pool,
    unavailable_reason,
)

from .errors import from_inference
from .models import CatalogEntry

logger = logging.getLogger(__name__)


async def resolve_entry(name: str) -> CatalogEntry:
    """The enabled catalog row called ``name``; raises the 400/5007 ``ApiError``."""
    entry = None if "\x00" in name else await CatalogEntry.objects.filter(name=name, is_enabled=True).afirst()
    if entry is None:
        raise from_inference(ModelNotFound(name))
    return entry


async def default_entry() -> CatalogEntry | None:
    entry = await CatalogEntry.objects.filter(is_default=True, is_enabled=True).afirst()
    return entry or await CatalogEntry.objects.filter(is_enabled=True).afirst()


def unavailable(entry: CatalogEntry) -> str | None:
    """Why ``entry`` cannot serve right now, or None. Cheap: never loads anything."""
    engine = pool.loaded(entry.name)
    if isinstance(engine, RemoteEngine):
        state = engine.state()
        return state if state.startswith("unreachable") else None
    if engine is not None:
        return None
    return pool.failure(entry.name) or unavailable_reason(entry.to_spec(), pool.settings.allow_downloads)


def state(entry: CatalogEntry) -> str:
    """What ``entry`` is doing now: ``loaded``, ``not loaded``, ``loading``, a remote entry's
    upstreams, or why it cannot serve."""
    engine = pool.loaded(entry.name)
    if isinstance(engine, RemoteEngine):
        return engine.state()
    if engine is not None:
        return "loaded"
    if pool.is_loading(entry.name):
        return "loading"
    if pool.was_unloaded(entry.name):
        return "unloaded (idle; loads on the next request)"
    reason = unavailable(entry)
    return f"unavailable: {reason}" if reason else ("remote" if entry.source.startswith("openai:") else "not loaded")


async def get_engine(entry: CatalogEntry) -> Engine | RemoteEngine:
    """The running engine for ``entry`` (loading it if needed); 503/5008 when it cannot."""
    try:
        return await pool.aget(entry.to_spec())
    except ModelUnavailable as exc:
        raise from_inference(exc) from None


def preload_specs() -> list[ModelSpec]:
    """Specs named by ``INFERENCE_PRELOAD`` (``default`` means the catalog's default)."""
    names = [n for n in settings.INFERENCE_PRELOAD if n.lower() != "none"]
    specs: list[ModelSpec] = []
    try:
        rows = {e.name: e for e in CatalogEntry.objects.filter(is_enabled=True)}
        default = next((e for e in rows.values() if e.is_default), None)
        for name in names:
            entry = default if name == "default" else rows.get(name)
            if entry is not None:
                specs.append(entry.to_spec())
            else:
                logger.warning("INFERENCE_PRELOAD: %s is not an enabled catalog entry", name)
    except DatabaseError:  # not migrated yet: fall back to the built-in catalog
        builtin = {s.name: s for s in BUILTIN_CATALOG}
        wanted = [DEFAULT_MODEL if n == "default" else n for n in names]
        specs = [builtin[n] for n in wanted if n in builtin]
    return specs


def start_preload() -> None:
    specs = preload_specs()
    if specs:
        pool.preload(specs)


def default_model_name() -> str | None:
    try:
        entry = CatalogEntry.objects.filter(is_default=True).first()
    except DatabaseError:
        return DEFAULT_MODEL
    return entry.name if entry else None


def on_setting_changed(setting: str, **kwargs: Any) -> None:
    """Tests that override inference settings get fresh engines."""
    if setting.startswith("INFERENCE") or setting == "MODEL_CACHE_DIR":
        pool.configure(settings.INFERENCE)


def entry_states() -> dict[str, str]:
    """Every enabled entry's ``state()`` (for ``/readyz``)."""
    return {entry.name: state(entry) for entry in CatalogEntry.objects.filter(is_enabled=True).order_by("name")}
