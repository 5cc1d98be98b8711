from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from enroll.notifications import send_expiry_reminders


class Command(BaseCommand):
    help = (
        "E-mail owners of valid, unrevoked, not yet renewed certificates 30, 7 and 1 days before expiry "
        "(each reminder once; safe to run hourly from cron). Prints how many were sent."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        sent = send_expiry_reminders()
        self.stdout.write(f"sent {sent} expiry reminder{'' if sent == 1 else 's'}")
