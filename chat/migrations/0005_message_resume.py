"""Answers that survive a restart: what each answer was asked with (to resume it), which
process holds it, and at most one streaming answer per conversation."""

import django.db.models.deletion
from django.db import migrations, models


def finish_extra_streaming_answers(apps, schema_editor):
    """Before the constraint: in a conversation with several streaming answers, only the
    newest stays streaming."""
    Message = apps.get_model("chat", "Message")
    newest: dict[int, int] = {}
    for pk, conversation_id in Message.objects.filter(state="streaming").order_by("pk").values_list(
            "pk", "conversation_id"):
        if conversation_id in newest:
            Message.objects.filter(pk=newest[conversation_id]).update(
                state="stopped", error="Interrupted: the server stopped while answering")
        newest[conversation_id] = pk


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0004_token_concurrency'),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='model',
            field=models.CharField(blank=True, help_text='The model that writes the answer', max_length=200),
        ),
        migrations.AddField(
            model_name='message',
            name='sampling',
            field=models.JSONField(blank=True, help_text="The answer's sampling settings", null=True),
        ),
        migrations.AddField(
            model_name='message',
            name='token',
            field=models.ForeignKey(blank=True, help_text='The API token that asked for the answer (its usage is charged to it)', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.apitoken'),
        ),
        migrations.AddField(
            model_name='message',
            name='worker',
            field=models.CharField(blank=True, help_text='The process generating the answer', max_length=100),
        ),
        migrations.AddField(
            model_name='message',
            name='lease_expires',
            field=models.DateTimeField(blank=True, help_text='Unless renewed, the answer is orphaned then', null=True),
        ),
        migrations.RunPython(finish_extra_streaming_answers, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='message',
            constraint=models.UniqueConstraint(condition=models.Q(('state', 'streaming')), fields=('conversation',), name='one_streaming_answer'),
        ),
    ]
