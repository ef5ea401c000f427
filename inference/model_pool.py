"""The process-wide model pool: one engine per model, built lazily, shared by all requests.

Shaped like channels' ``ChannelLayerManager``: a module-level ``pool`` that reads
settings when it first builds an engine, can be ``reset()``, and lets tests ``set()``
an engine of their own.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable

from .catalog import ModelSpec, unavailable_reason
from .config import InferenceSettings
from .engine import Engine
from .errors import ModelUnavailable
from .loader import LoadedModel
from .remote import RemoteEngine

logger = logging.getLogger(__name__)
FAILED_LOAD_BACKOFF = (30.0, 600.0)  # seconds before a failed load is tried again: first, at most


class ModelPool:
    def __init__(self) -> None:
        self._engines: dict[str, Engine | RemoteEngine] = {}
        self._specs: dict[str, ModelSpec] = {}
        self._failures: dict[str, str] = {}
        self._retry_at: dict[str, tuple[float, float]] = {}  # name -> (when a failed load may be retried, back-off)
        self._unloaded: set[str] = set()  # unloaded after their keep-alive: they load again on demand
        self._reaper: threading.Thread | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._settings: InferenceSettings | None = None
        self._closed = False  # the server is stopping: no engine may start any more

    @property
    def settings(self) -> InferenceSettings:
        """What engines are built with: ``configure()``d, else read from the environment."""
        if self._settings is None:
            self._settings = InferenceSettings.from_env()
        return self._settings

    def configure(self, settings: InferenceSettings) -> None:
        """Use ``settings`` for engines built from now on (running ones are reset)."""
        self.reset()
        self._settings = settings

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def is_loaded(self, name: str) -> bool:
        return name in self._engines

    def loaded(self, name: str) -> Engine | RemoteEngine | None:
        return self._engines.get(name)

    def is_loading(self, name: str) -> bool:
        lock = self._locks.get(name)
        return name not in self._engines and lock is not None and lock.locked()

    def failure(self, name: str) -> str | None:
        """Why the last load of ``name`` failed, if it did (and it is not time to retry yet)."""
        return self._failures.get(name)

    def was_unloaded(self, name: str) -> bool:
        """``name`` was loaded and went for being idle: it loads again on the next request."""
        return name in self._unloaded

    def engines(self) -> list[Engine | RemoteEngine]:
        return list(self._engines.values())

    def get(self, spec: ModelSpec) -> Engine | RemoteEngine:
        """Return the engine for ``spec``, loading it on first use (blocking).

        Raises ``ModelUnavailable`` when the weights are absent or the load fails; the
        failure is remembered so that later calls answer at once.
        """
        engine = self._engines.get(spec.name)
        if engine is not None and self._specs.get(spec.name) in (None, spec):
            return engine
        if self._closed:
            raise ModelUnavailable(spec.name, "the server is shutting down")
        with self._lock_for(spec.name):
            engine = self._engines.get(spec.name)
            current = self._specs.get(spec.name)
            if engine is not None and (current is None or _same_weights(current, spec)):
                self._specs[spec.name] = spec
                return engine
            if engine is not None:  # source or precision changed in the catalog: rebuild
                engine.shutdown()
                del self._engines[spec.name]
            if spec.name in self._failures and self._specs.get(spec.name) == spec:
                if time.monotonic() < self._retry_at.get(spec.name, (0.0, 0.0))[0]:
                    raise ModelUnavailable(spec.name, self._failures[spec.name])
                logger.info("retrying the load of %s after its back-off", spec.name)
            if spec.is_remote:
                self._specs[spec.name] = spec
                remote = RemoteEngine(spec)
                self._engines[spec.name] = remote
                return remote
            settings = self.settings
            reason = unavailable_reason(spec, settings.allow_downloads)
            if reason is not None:
                raise ModelUnavailable(spec.name, reason)
            self._make_room(spec.name)
            self._specs[spec.name] = spec
            try:
                from .loader import load_model

                def load() -> LoadedModel:  # on the engine's own thread
                    if settings.num_threads:
                        import torch

                        torch.set_num_threads(settings.num_threads)
                    return load_model(spec, settings)

                engine = Engine(spec, load, settings)
            except Exception as exc:  # noqa: BLE001 - any load failure makes it unavailable
                logger.exception("loading %s failed", spec.name)
                first, longest = FAILED_LOAD_BACKOFF
                backoff = min(self._retry_at.get(spec.name, (0.0, first / 2))[1] * 2, longest)
                self._retry_at[spec.name] = (time.monotonic() + backoff, backoff)
                self._failures[spec.name] = f"failed to load (details in the server log); retried in {backoff:.0f} s"
                raise ModelUnavailable(spec.name, self._failures[spec.name]) from exc
            if self._closed:  # the server began stopping while this one loaded: it must not outlive it
                engine.shutdown()
                raise ModelUnavailable(spec.name, "the server is shutting down")
            self._failures.pop(spec.name, None)
            self._retry_at.pop(spec.name, None)
            self._unloaded.discard(spec.name)
            self._engines[spec.name] = engine
            self._start_reaper()
            return engine

    # keep-alive ------------------------------------------------------------------------------
    def _local(self) -> dict[str, Engine]:
        return {n: e for n, e in self._engines.items() if isinstance(e, Engine)}

    def _make_room(self, name: str) -> None:
        """Under ``INFERENCE_MAX_LOADED_MODELS``, unload the least recently used idle model
        before loading ``name``; 503 when every loaded model is busy."""
        cap = self.settings.max_loaded_models
        local = self._local()
        if not cap or len(local) < cap:
            return
        idle = sorted((e.last_used, n) for n, e in local.items() if e.idle_for() > 0)
        if not idle:
            raise ModelUnavailable(name, f"{cap} models are loaded (INFERENCE_MAX_LOADED_MODELS) and all are busy; "
                                         "retry shortly")
        self.unload(idle[0][1], "to make room")

    def unload(self, name: str, why: str = "") -> bool:
        """Shut ``name``'s local engine down and free its memory; the next request loads it again."""
        with self._guard:
            engine = self._engines.get(name)
            if not isinstance(engine, Engine):
                return False
            del self._engines[name]
            self._unloaded.add(name)
        engine.shutdown()
        logger.info("unloaded %s %s", name, why)
        return True

    def _start_reaper(self) -> None:
        keep_alive = self.settings.keep_alive
        if keep_alive < 0 or (self._reaper is not None and self._reaper.is_alive()):
            return
        every = min(30.0, max(0.5, keep_alive / 4))

        def reap() -> None:
            while True:
                time.sleep(every)
                for name, engine in list(self._local().items()):
                    idle = engine.idle_for()
                    if idle >= keep_alive:
                        with self._lock_for(name):
                            if engine.idle_for() >= keep_alive:
                                self.unload(name, f"after {idle:.0f} s idle (INFERENCE_KEEP_ALIVE={keep_alive})")

        self._reaper = threading.Thread(target=reap, name="model-keep-alive", daemon=True)
        self._reaper.start()

    async def aget(self, spec: ModelSpec) -> Engine | RemoteEngine:
        """``get`` without blocking the event loop while a model loads."""
        engine = self._engines.get(spec.name)
        if engine is not None and self._specs.get(spec.name) == spec:
            return engine
        return await asyncio.to_thread(self.get, spec)

    def preload(self, specs: Iterable[ModelSpec]) -> threading.Thread:
        """Load ``specs`` on a background thread (server start); failures are logged."""
        def run() -> None:
            for spec in specs:
                try:
                    self.get(spec)
                except ModelUnavailable as exc:
                    logger.warning("preload: %s", exc)

        thread = threading.Thread(target=run, name="model-preload", daemon=True)
        thread.start()
        return thread

    def set(self, name: str, engine: Engine) -> None:
        """Install an engine (tests)."""
        self._engines[name] = engine
        self._specs[name] = engine.spec

    def close(self) -> None:
        """Shut down every engine and refuse to start new ones: the server is stopping (an
        answer resumed after a crash must not start an engine once SIGTERM has come)."""
        self._closed = True
        self.reset()

    def reset(self) -> None:
        """Shut down every engine and forget failures."""
        with self._guard:
            engines, self._engines = list(self._engines.values()), {}
            self._specs, self._failures = {}, {}
            self._retry_at, self._unloaded = {}, set()
        for engine in engines:
            engine.shutdown()


def _same_weights(a: ModelSpec, b: ModelSpec) -> bool:
    return a.source == b.source and a.precision == b.precision and not a.is_remote


pool = ModelPool()
