from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from enroll import flows


class Command(BaseCommand):
    help = "Reject a submitted request with a reason the requester will read."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("request_id", type=int)
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            request = flows.reject(request_id=options["request_id"], reason=options["reason"])
        except flows.FlowError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"rejected request #{request.pk}")
