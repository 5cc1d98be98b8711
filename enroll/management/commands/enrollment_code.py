from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from enroll import flows
from enroll.device_info import instructions
from enroll.management.commands._common import get_user


class Command(BaseCommand):
    help = (
        "Make an enrollment code for a user's device (EST password, SCEP challengePassword): single use and "
        "valid for 24 hours unless told otherwise. The operator counts as an approver: --approved makes "
        "requests with it issue without the approval queue. Prints the code alone on the last line; it is "
        "shown only this once."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--user", required=True, metavar="USERNAME", help="The account the device enrolls for."
        )
        parser.add_argument("--device", default="", metavar="NAME", help="The device's name (a label).")
        parser.add_argument(
            "--approved", action="store_true", help="Pre-approved: issue without the approval queue."
        )
        parser.add_argument("--uses", type=int, default=1, metavar="N", help="How many requests (default 1).")
        parser.add_argument(
            "--hours", type=float, default=24, metavar="H", help="How long it is valid (default 24)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user(options["user"])
        try:
            row, code = flows.create_enrollment_code(
                owner=owner,
                created_by=None,  # the operator on the command line, as for manage.py approve
                device_name=options["device"],
                pre_approve=bool(options["approved"]),
                uses=options["uses"],
                hours=options["hours"],
            )
        except flows.FlowError as exc:
            raise CommandError(str(exc)) from None
        how = "pre-approved" if row.pre_approved else "requests wait in the approval queue"
        device = f" for device {row.device_name!r}" if row.device_name else ""
        uses = "once" if row.max_uses == 1 else f"{row.max_uses} times"
        self.stdout.write(
            f"enrollment code #{row.pk} for {owner.get_username()}{device}: {how}, usable {uses} until "
            f"{row.expires_at:%Y-%m-%d %H:%M} UTC"
        )
        info = instructions(code=code, device_name=row.device_name, username=owner.get_username())
        self.stdout.write(f"EST: {info.est_url}")
        if info.scep_url:
            self.stdout.write(
                f"SCEP: {info.scep_url}" + ("" if row.max_uses == 1 else " (not with a multi-use code)")
            )
        self.stdout.write(code)
