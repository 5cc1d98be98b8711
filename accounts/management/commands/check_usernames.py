from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts import usernames


class Command(BaseCommand):
    help = (
        "Report existing accounts whose username breaks today's rules (1 to 64 characters of the allowed "
        "set, no look-alike of an older account's name: docs/ARCHITECTURE.md). Changes nothing; exits 1 if "
        "any account is reported. Names are printed with non-ASCII characters escaped."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        lines = usernames.existing_problems()
        for line in lines:
            self.stdout.write(line)
        if lines:
            raise CommandError(f"{len(lines)} username(s) break the rules; nothing was changed.")
        self.stdout.write("Every username follows the rules.")
