"""``python -m waiproject.serve``: the HTTP server ``make run`` starts (uvicorn).

The HTTP server runs on a thread and the process's main thread runs the first model's engine
(``inference.host``: torch's CPU ops run about twice as fast there). uvicorn with uvloop and
httptools where installed: its per-event cost is a fraction of daphne's, which shows in tokens
per second for one stream on a 2-core machine (measured side by side: 46-49 vs 27-36 tok/s),
and its ``send()`` waits while a slow client's socket buffer is full, so an SSE reader that
stops reading holds the generator instead of growing memory. ``manage.py runserver`` still
serves ASGI through daphne for development.

Options come from the command line or the environment (``HOST``, ``PORT``, ``WORKERS``,
``FORWARDED_ALLOW_IPS``). Proxy headers are trusted only from the addresses listed in
``FORWARDED_ALLOW_IPS`` (none by default), so a client cannot claim another address.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import uvicorn

APP = "waiproject.asgi:application"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m waiproject.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")),
                        help="processes sharing the port (each loads its own engines)")
    parser.add_argument("--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", ""),
                        help="proxies whose X-Forwarded-For/-Proto are trusted (comma-separated, '*' for any)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "waiproject.settings")
    options: dict[str, Any] = dict(
        host=args.host,
        port=args.port,
        lifespan="off",  # Django's ASGI handler speaks http only
        access_log=False,  # the app logs one line per generation itself
        proxy_headers=bool(args.forwarded_allow_ips),
        forwarded_allow_ips=args.forwarded_allow_ips or None,
        server_header=False,
    )
    if args.workers > 1:  # uvicorn's supervisor: each worker process serves on its main thread
        uvicorn.run(APP, workers=args.workers, **options)
        return
    serve_beside_engine(uvicorn.Server(uvicorn.Config(APP, **options)))


def serve_beside_engine(server: uvicorn.Server) -> None:
    """Serve HTTP on a thread and lend the main thread to the first engine: its torch ops run
    about twice as fast there (see ``inference.host``)."""
    from inference import MainThreadHost, pool

    host = MainThreadHost()
    for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn listens for signals only on the main thread
        signal.signal(sig, server.handle_exit)

    exit_code: list[str | int | None] = []

    def serve() -> None:
        try:
            server.config.load()  # imports the app (which touches the database) before a loop runs here
            server.run()
        except SystemExit as exc:  # uvicorn exits this way when it cannot start (port taken...)
            exit_code.append(exc.code)
        finally:
            pool.close()  # stop the engines, and refuse new ones: the main thread comes back and the process ends

    http = threading.Thread(target=serve, name="http")
    http.start()
    host.serve(until=lambda: not http.is_alive())
    http.join()
    if exit_code:
        sys.exit(exit_code[0])


if __name__ == "__main__":
    main()
