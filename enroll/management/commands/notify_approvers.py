from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from enroll.approver_mail import send_digests, send_reminders


class Command(BaseCommand):
    help = (
        "E-mail approvers: the digest of new requests (to those who chose it; each request once) and one "
        "reminder of the requests waiting past ENROLL_APPROVAL_SERVICE_HOURS (each request once). Safe to "
        "run hourly from cron. Prints how many were sent."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        digests = send_digests()
        reminders = send_reminders()
        self.stdout.write(
            f"sent {digests} digest{'' if digests == 1 else 's'} and "
            f"{reminders} reminder{'' if reminders == 1 else 's'} to approvers"
        )
