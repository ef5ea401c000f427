"""``manage.py bench``: the benchmark (see the ``bench`` package); this is only its entry."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench import cli
from bench.server import BenchError


class Command(BaseCommand):
    runner = cli  # a module with add_arguments(parser) and run(options, out, err)
    help = (
        "Benchmark our server over its OpenAI-compatible streaming endpoint (streams, long prompt, "
        "interference, multi-turn, memory), optionally against a peer server (--peer URL) or the naive "
        "transformers baseline, and print the figures side by side with their ratios."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.runner.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        def out(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            self.runner.run(options, out, self.stderr.write)
        except BenchError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after the server and token were cleaned up
            self.stderr.write(f"{self.runner.__name__.rpartition('.')[2]} interrupted")
            raise SystemExit(130) from None
