"""The Django side's data: the model catalog, API tokens, usage, conversations."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from inference import ModelSpec

TOKEN_PREFIX = "wai_"


class CatalogEntry(models.Model):
    class Precision(models.TextChoices):
        FULL = "full", "full precision"
        INT8 = "int8", "8-bit weights"

    name = models.CharField(max_length=200, unique=True, help_text="@cf/<publisher>/<model>[-variant]")
    description = models.TextField(blank=True)
    source = models.CharField(
        max_length=500,
        help_text="package:<module>/<file>, assembled:<glue module>, hf:<repo id>, path:<directory or .gguf file>, or "
                  "openai:<base URL ending in /v1> (a remote OpenAI-compatible server)",
    )
    upstream_model = models.CharField(max_length=200, blank=True,
                                      help_text="openai: the model's name at the upstream (default: this name)")
    api_key_env = models.CharField(max_length=100, blank=True,
                                   help_text="openai: the environment variable holding the upstream's API key "
                                             "(the key itself is never stored)")
    extra_upstreams = models.JSONField(default=list, blank=True,
                                       help_text="openai: more base URLs serving the same model")
    precision = models.CharField(max_length=10, choices=Precision.choices, default=Precision.FULL)
    context_length = models.PositiveIntegerField(help_text="Maximum input tokens")
    max_output_tokens = models.PositiveIntegerField(help_text="Maximum tokens generated (sequence length)")
    is_enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False, help_text="The model used when none is chosen")
    serving = models.CharField(max_length=120, blank=True, editable=False,
                               help_text="How a local entry is served: a native family (native: llama) or "
                                         "transformers' own classes (transformers: gpt2); found when its source is set")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "catalog entry"
        verbose_name_plural = "model catalog"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_model"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def to_spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            source=self.source,
            precision=self.precision,
            context_length=self.context_length,
            max_output_tokens=self.max_output_tokens,
            description=self.description,
            upstream_model=self.upstream_model,
            api_key_env=self.api_key_env,
            upstreams=tuple(self.extra_upstreams or ()),
        )

    def save(self, *args: object, **kwargs: object) -> None:
        if self.is_default:
            CatalogEntry.objects.filter(is_default=True).exclude(pk=self.pk).update(is_default=False)
        super().save(*args, **kwargs)  # type: ignore[arg-type]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token. Only a SHA-256 of the secret is stored; the prefix finds the row."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Leave empty for no expiry")
    revoked_at = models.DateTimeField(null=True, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty for no limit"
    )
    max_concurrent_generations = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Generations this token may run at once; 0 for no limit; empty for the server default",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, owner: Any, name: str, **fields: Any) -> tuple[ApiToken, str]:
        """Create a token; returns it with its secret, which is not stored anywhere."""
        token = cls(owner=owner, name=name, **fields)
        secret = token.set_new_secret()
        token.save()
        return token, secret

    def set_new_secret(self) -> str:
        prefix = TOKEN_PREFIX + secrets.token_hex(4)
        secret = f"{prefix}_{secrets.token_urlsafe(32)}"
        self.prefix = prefix
        self.secret_hash = hash_secret(secret)
        return secret

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))

    @staticmethod
    def prefix_of(secret: str) -> str:
        return secret[: len(TOKEN_PREFIX) + 8]

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    is_active.boolean = True  # type: ignore[attr-defined]


class UsageRecord(models.Model):
    """Tokens used by one request, for a token or a logged-in user."""

    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=20)  # native | openai | chat
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    finish_reason = models.CharField(max_length=10)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Conversation(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    # Messages form a tree (regenerated answers and edited questions are siblings); the page
    # shows, and the next turn continues, the path from the root to this message.
    current_leaf = models.ForeignKey("Message", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+", help_text="The last message of the branch shown")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class State(models.TextChoices):
        STREAMING = "streaming"
        DONE = "done"
        STOPPED = "stopped"
        ERROR = "error"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children",
                               help_text="The message this one follows (none for a conversation's first)")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.DONE)
    error = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=10, blank=True, help_text="stop, length, abort or error")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    in_context = models.BooleanField(default=True, help_text="Was part of the prompt of the latest answer")
    # what an answer was asked with, so that one cut by a crash or restart can be resumed
    model = models.CharField(max_length=200, blank=True, help_text="The model that writes the answer")
    sampling = models.JSONField(null=True, blank=True, help_text="The answer's sampling settings")
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="The API token that asked for the answer (its usage is charged to it)")
    # who generates a streaming answer (see chat/leases.py)
    worker = models.CharField(max_length=100, blank=True, help_text="The process generating the answer")
    lease_expires = models.DateTimeField(null=True, blank=True, help_text="Unless renewed, the answer is orphaned then")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(  # one turn at a time, however many workers take posts
                fields=["conversation"], condition=models.Q(state="streaming"), name="one_streaming_answer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
