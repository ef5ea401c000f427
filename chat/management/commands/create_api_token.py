from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME; the secret is printed on the last line (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--create-user", action="store_true", help="create the user if it does not exist")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist:
            if not options["create_user"]:
                raise CommandError(f"no user {options['username']!r} (use --create-user)") from None
            user = User.objects.create_user(username=options["username"])
        token, secret = ApiToken.issue(user, options["name"])
        self.stderr.write(f"Created token {token.name!r} ({token.prefix}) for {user.get_username()}")
        self.stdout.write(secret)
