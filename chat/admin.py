"""Admin: the catalog, API tokens (secret shown once), usage, conversations."""
from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from django.contrib import admin
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from .catalog import state
from .models import ApiToken, CatalogEntry, Conversation, Message, UsageRecord


@admin.register(CatalogEntry)
class CatalogEntryAdmin(admin.ModelAdmin):
    list_display = ("name", "precision", "context_length", "max_output_tokens", "is_enabled", "is_default",
                    "availability", "serving")
    readonly_fields = ("serving",)
    list_editable = ("is_enabled", "context_length", "max_output_tokens")
    list_filter = ("is_enabled", "precision")
    search_fields = ("name", "description", "source")

    @admin.display(description="state")
    def availability(self, obj: CatalogEntry) -> str:
        return state(obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)

        class CheckedSource(form):  # type: ignore[misc,valid-type]
            """A local source is refused with the reason when no path can serve it."""

            def clean(self) -> dict[str, Any]:
                data: dict[str, Any] = super().clean()
                source = data.get("source") or ""
                if source and not source.startswith("openai:") and "source" in self.changed_data:
                    from inference import describe_source, pool

                    entry = CatalogEntry(name=data.get("name") or "?", source=source,
                                         precision=data.get("precision") or "full",
                                         context_length=data.get("context_length") or 1,
                                         max_output_tokens=data.get("max_output_tokens") or 1)
                    try:
                        self.instance.serving = describe_source(entry.to_spec(), pool.settings)
                    except (FileNotFoundError, ValueError, ImportError) as exc:
                        self.add_error("source", f"cannot be served: {exc}")
                return data

        return CheckedSource


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at",
                    "rate_limit_per_minute", "is_active", "total_tokens")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "owner__username")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("name", "owner", "prefix", "expires_at", "rate_limit_per_minute", "max_concurrent_generations",
              "revoked_at", "created_at", "last_used_at")
    actions = ("revoke",)
    # save_model -> response_add within one request; keyed by request so requests on
    # other threads never see each other's secret.
    _new_secrets: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        return super().get_queryset(request).annotate(
            _total=Sum("usage__prompt_tokens") + Sum("usage__completion_tokens")
        )

    @admin.display(description="tokens used")
    def total_tokens(self, obj: Any) -> int:
        return obj._total or 0

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            self._new_secrets[request] = obj.set_new_secret()
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        """Show the new secret in this response only: it is in no cookie, session or log."""
        context = {**self.admin_site.each_context(request), "opts": self.opts, "token": obj,
                   "secret": self._new_secrets.pop(request), "title": "API token created"}
        return TemplateResponse(request, "admin/chat/apitoken/secret.html", context)  # admin pages are no-store

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        n = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {n} token(s).")


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ("created_at", "model", "endpoint", "token", "user", "prompt_tokens", "completion_tokens",
                    "finish_reason", "time_to_first_token_ms", "duration_ms")
    list_filter = ("model", "endpoint", "finish_reason", "token")
    date_hierarchy = "created_at"
    search_fields = ("token__prefix", "token__name", "user__username", "model")
    change_list_template = "admin/chat/usagerecord/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if not context or "cl" not in context:
            return response
        qs = context["cl"].queryset
        context["daily"] = (
            qs.annotate(day=TruncDay("created_at"))
            .values("day", "token__prefix", "token__name")
            .annotate(requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
            .order_by("-day", "token__prefix")[:60]
        )
        return response


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "parent", "state", "content", "completion_tokens", "in_context", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("parent",)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "model", "created_at", "updated_at")
    list_filter = ("model",)
    search_fields = ("title", "owner__username", "messages__content")
    raw_id_fields = ("owner", "current_leaf")  # not a menu of every message there is
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("conversation", "role", "state", "short", "completion_tokens", "created_at")
    list_filter = ("role", "state")
    search_fields = ("content", "conversation__title")
    raw_id_fields = ("conversation", "parent", "token")

    @admin.display(description="content")
    def short(self, obj: Message) -> str:
        return obj.content[:80]
