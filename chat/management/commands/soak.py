"""``manage.py soak``: the soak test (see ``bench.soak``); this is only its entry."""
from __future__ import annotations

from bench import soak

from .bench import Command as BenchCommand


class Command(BenchCommand):
    runner = soak
    help = (
        "Hold many streams against a started server for minutes, with hang-ups, reconnects, bad requests "
        "and chat turns mixed in; print the server's RSS over time, errors, and whether every finished "
        "answer was complete."
    )
