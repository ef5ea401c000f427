"""Messages form a tree: each has a parent, and a conversation remembers the leaf it shows.
Existing conversations become one branch: each message follows the one before it."""
from __future__ import annotations

from typing import Any

import django.db.models.deletion
from django.db import migrations, models


def chain(apps: Any, schema_editor: Any) -> None:
    Conversation = apps.get_model("chat", "Conversation")
    Message = apps.get_model("chat", "Message")
    for conversation in Conversation.objects.all().iterator():
        previous = None
        for message in Message.objects.filter(conversation=conversation).order_by("created_at", "id"):
            if previous is not None:
                Message.objects.filter(pk=message.pk).update(parent=previous)
            previous = message.pk
        if previous is not None:
            Conversation.objects.filter(pk=conversation.pk).update(current_leaf=previous)


class Migration(migrations.Migration):
    dependencies = [("chat", "0006_remote_upstreams")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(blank=True, help_text="The message this one follows (none for a conversation's first)",
                                    null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="children", to="chat.message"),
        ),
        migrations.AddField(
            model_name="conversation",
            name="current_leaf",
            field=models.ForeignKey(blank=True, help_text="The last message of the branch shown", null=True,
                                    on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                                    to="chat.message"),
        ),
        migrations.AlterModelOptions(name="conversation", options={"ordering": ["-updated_at", "-id"]}),
        migrations.RunPython(chain, migrations.RunPython.noop),
    ]
