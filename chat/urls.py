from __future__ import annotations

from django.urls import path

from .views import conversations, page

urlpatterns = [
    path("", page.chat, name="chat"),
    path("c/<int:conversation_id>", page.chat, name="chat-conversation"),
    path("api/conversations", conversations.conversations, name="conversations"),
    path("api/conversations/<int:conversation_id>", conversations.conversation_detail, name="conversation"),
    path("api/conversations/<int:conversation_id>/messages", conversations.post_message, name="messages"),
    path("api/conversations/<int:conversation_id>/messages/<int:message_id>/stream", conversations.message_stream,
         name="message-stream"),
    path("api/conversations/<int:conversation_id>/messages/<int:message_id>/stop", conversations.stop_message,
         name="message-stop"),
    path("api/conversations/<int:conversation_id>/messages/<int:message_id>/regenerate",
         conversations.regenerate_message, name="message-regenerate"),
    path("api/conversations/<int:conversation_id>/messages/<int:message_id>/select", conversations.select_message,
         name="message-select"),
    path("api/conversations/<int:conversation_id>/export", conversations.export_conversation,
         name="conversation-export"),
    path("api/context", conversations.context_usage, name="context-usage"),
]
