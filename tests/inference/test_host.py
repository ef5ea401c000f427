"""Engines run on the main thread where the server lends it (inference.host), without torch."""
from __future__ import annotations

import threading

from inference import host
from inference.host import MainThreadHost


def test_the_first_worker_runs_on_the_lent_main_thread_and_later_ones_get_threads() -> None:
    ran_on: dict[str, threading.Thread] = {}
    release = threading.Event()

    def worker(name: str) -> None:
        ran_on[name] = threading.current_thread()
        release.wait(5)

    lent = MainThreadHost()
    workers: list[host.Worker] = []

    def program() -> None:  # what the HTTP thread does: start engines, then stop them
        workers.append(host.start(lambda: worker("first"), "engine-first"))
        workers.append(host.start(lambda: worker("second"), "engine-second"))
        while len(ran_on) < 2:
            threading.Event().wait(0.01)
        release.set()
        for w in workers:
            w.join(5)

    other = threading.Thread(target=program)
    other.start()
    lent.serve(until=lambda: not other.is_alive(), poll=0.01)
    assert ran_on["first"] is threading.main_thread()
    assert ran_on["second"] is not threading.main_thread()
    assert not any(w.is_alive() for w in workers)
    # once the host is done, workers get threads again
    done = host.start(lambda: worker("after"), "engine-after")
    done.join(5)
    assert ran_on["after"] is not threading.main_thread()


def test_the_host_must_be_the_main_thread() -> None:
    errors: list[Exception] = []

    def make() -> None:
        try:
            MainThreadHost()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    assert errors


def test_a_worker_offered_too_late_still_runs() -> None:
    lent = MainThreadHost()
    job = host.start(lambda: None, "engine-late")  # queued, but the host stops at once
    lent.serve(until=lambda: True)
    job.join(5)
    assert not job.is_alive()
