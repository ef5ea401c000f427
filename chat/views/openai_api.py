"""OpenAI-compatible API (being written)."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse


async def list_models(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"error": {"message": "not implemented", "type": "server_error", "code": None}}, status=501)


chat_completions = completions = list_models
