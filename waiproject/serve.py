"""``python -m waiproject.serve``: the HTTP server ``make run`` starts (uvicorn).

uvicorn with uvloop and httptools where installed: its per-event cost is a fraction of
daphne's, which shows in tokens per second for one stream on a 2-core machine (measured
side by side: 46-49 vs 27-36 tok/s), and its ``send()`` waits while a slow client's
socket buffer is full, so an SSE reader that stops reading holds the generator instead of
growing memory. ``manage.py runserver`` still serves ASGI through daphne for development.

Options come from the command line or the environment (``HOST``, ``PORT``, ``WORKERS``,
``FORWARDED_ALLOW_IPS``). Proxy headers are trusted only from the addresses listed in
``FORWARDED_ALLOW_IPS`` (none by default), so a client cannot claim another address.
"""
from __future__ import annotations

import argparse
import os

import uvicorn


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
    uvicorn.run(
        "waiproject.asgi:application",
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        lifespan="off",  # Django's ASGI handler speaks http only
        access_log=False,  # the app logs one line per generation itself
        proxy_headers=bool(args.forwarded_allow_ips),
        forwarded_allow_ips=args.forwarded_allow_ips or None,
        server_header=False,
    )


if __name__ == "__main__":
    main()
