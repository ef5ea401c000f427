from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Workers AI"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.core.signals import setting_changed

        from inference import pool

        from . import lookups
        from .catalog import on_setting_changed

        lookups.install()
        pool.configure(settings.INFERENCE)
        setting_changed.connect(on_setting_changed)
