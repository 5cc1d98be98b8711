from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from enroll import flows
from enroll.models import RequestStatus


class Command(BaseCommand):
    help = "Approve a request and issue its certificate. Prints the certificate's serial (hex) last."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("request_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            request = flows.approve(request_id=options["request_id"])
        except flows.FlowError as exc:
            raise CommandError(str(exc)) from None
        if request.status != RequestStatus.ISSUED or request.certificate is None:
            raise CommandError(f"Request #{request.pk} approved, but {request.reason}")
        self.stdout.write(
            f"issued {request.certificate.subject}, valid until {request.certificate.not_after:%Y-%m-%d}"
        )
        self.stdout.write(request.certificate.serial)
