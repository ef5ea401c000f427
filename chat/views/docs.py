"""The API's OpenAPI document and its rendered reference page (placeholder)."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse


def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"openapi": "3.1.0", "info": {"title": "Workers AI", "version": "0"}, "paths": {}})


def reference(request: HttpRequest) -> HttpResponse:
    return HttpResponse("API reference: see /openapi.json", content_type="text/plain")
