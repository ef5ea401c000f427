"""The chat page (HTML). Everything dynamic comes from the conversation endpoints."""
from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from ..models import Conversation


@login_required
@ensure_csrf_cookie
def chat(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    """The page; ``/c/<id>`` opens that conversation (404 unless it is the user's)."""
    user: Any = request.user
    if conversation_id is not None and not Conversation.objects.filter(pk=conversation_id, owner=user).exists():
        raise Http404("Conversation not found")
    return render(request, "chat/chat.html", {"conversation_id": conversation_id or ""})
