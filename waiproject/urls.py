from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chat.views import api, docs, openai_api, ops

urlpatterns = [
    path("ai/run/<path:model>", api.run, name="ai-run"),
    path("client/v4/accounts/<str:account_id>/ai/run/<path:model>", api.run, name="ai-run-account"),
    path("ai/models/search", api.models_search, name="ai-models-search"),
    path("client/v4/accounts/<str:account_id>/ai/models/search", api.models_search),
    path("v1/models", openai_api.list_models, name="openai-models"),
    path("v1/models/<path:model>", openai_api.retrieve_model, name="openai-model"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
    path("v1/completions", openai_api.completions, name="openai-completions"),
    path("tokenize", openai_api.tokenize, name="tokenize"),
    path("detokenize", openai_api.detokenize, name="detokenize"),
    path("openapi.json", docs.openapi_json, name="openapi"),
    path("docs", docs.reference, name="api-reference"),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # Not django.contrib.auth.urls: without an email backend password reset cannot work.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(),
         name="password_change_done"),
    path("", include("chat.urls")),
]

handler404 = "chat.views.ops.not_found"
handler500 = "chat.views.ops.server_error"
