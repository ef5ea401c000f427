"""ASGI entry point (``python -m waiproject.serve`` runs it under uvicorn). Serves static
files itself, starts loading the preloaded models in the background (/readyz turns 200
when they are ready), and resumes answers a crash cut short."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "waiproject.settings")
django_application = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from chat.asgi_limits import limit_requests  # noqa: E402
from chat.catalog import start_preload  # noqa: E402
from chat.turns import resume_interrupted  # noqa: E402

application = limit_requests(ASGIStaticFilesHandler(django_application))
start_preload()
resume_interrupted()
