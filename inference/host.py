"""Where an engine's worker runs: on the process's main thread when the server offers it,
else on a thread of its own.

On a CPU, torch runs the parallel part of each op on an OpenMP team owned by the thread that
calls it. A team owned by the main thread keeps its workers spinning between ops; a team owned
by any other thread lets them sleep, and waking them costs microseconds on each of the thousand
or so ops of a decode step. Measured on 2 cores, the same one-token forward of the built-in
model took 6.0 ms on the main thread and 11.6 ms on another (8.5 ms with one thread), and one
stream went from 85 to 131-145 tokens/s, 16 streams from about 420 to 540.

So ``python -m waiproject.serve`` runs the HTTP server on a thread and hands the main thread to
a ``MainThreadHost``: the first engine started runs its whole life there (loading, then its
loop); engines of further models get threads, as everywhere else (tests, ``runserver``).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol


class Worker(Protocol):
    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


class _Job:
    def __init__(self, target: Callable[[], None]) -> None:
        self.target = target
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.target()
        finally:
            self.done.set()

    def join(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)

    def is_alive(self) -> bool:
        return not self.done.is_set()


_lock = threading.Lock()
_host: MainThreadHost | None = None


class MainThreadHost:
    """Offers the main thread to one engine at a time. Create it on the main thread before
    anything can start an engine, start the rest of the program on other threads, then call
    ``serve`` until they are done."""

    def __init__(self) -> None:
        global _host
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("MainThreadHost must be created on the main thread")
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._busy = False
        with _lock:
            _host = self

    def _take(self, target: Callable[[], None]) -> _Job | None:
        if self._busy:
            return None
        self._busy = True
        job = _Job(target)
        self._jobs.put(job)
        return job

    def serve(self, until: Callable[[], bool], poll: float = 0.2) -> None:
        """Run offered jobs on this (main) thread until ``until()`` is true between jobs."""
        global _host
        try:
            while not until():
                try:
                    job = self._jobs.get(timeout=poll)
                except queue.Empty:
                    continue
                job.run()
                with _lock:
                    self._busy = False
        finally:
            with _lock:
                _host = None
            while not self._jobs.empty():  # offered too late: run it elsewhere rather than never
                threading.Thread(target=self._jobs.get().run, daemon=True).start()


def start(target: Callable[[], None], name: str) -> Worker:
    """Run ``target`` on the offered main thread if it is free, else on a new daemon thread."""
    with _lock:
        job = _host._take(target) if _host is not None else None
    if job is not None:
        return job
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
