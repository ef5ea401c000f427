"""ASGI entry point (``python -m waiproject.serve`` runs it under uvicorn). Serves static
files itself, starts loading the preloaded models in the background (/readyz turns 200
when they are ready), and resumes answers a crash cut short."""
from __future__ import annotations

import asyncio
import os
import threading

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "waiproject.settings")
django_application = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from chat.asgi_limits import limit_requests  # noqa: E402
from chat.catalog import start_preload  # noqa: E402
from chat.turns import resume_interrupted  # noqa: E402

application = limit_requests(ASGIStaticFilesHandler(django_application))


def _start() -> None:
    start_preload()  # reads the catalog from the database


try:  # uvicorn's workers (WORKERS > 1) import the application inside their event loop, where Django
    asyncio.get_running_loop()  # refuses database queries: run them on a thread of their own
except RuntimeError:
    _start()
else:
    starter = threading.Thread(target=_start, name="preload")
    starter.start()
    starter.join()
resume_interrupted()
