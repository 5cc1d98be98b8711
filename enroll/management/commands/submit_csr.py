from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.pki.csr import MAX_SUBMISSION_BYTES
from ca.pki.errors import RequestRefused
from enroll import flows
from enroll.management.commands._common import get_user, read_input


class Command(BaseCommand):
    help = "Submit a CSR (PEM or DER, a file or - for standard input) for a user. Prints the request id last."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", required=True, metavar="USERNAME")
        parser.add_argument("file", help="CSR file, or - to read standard input.")
        parser.add_argument(
            "--device",
            default="",
            metavar="NAME",
            help="The device the certificate is for (optional, at most 64 characters; not put into it).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user(options["user"])
        data = read_input(options["file"], limit=MAX_SUBMISSION_BYTES)
        try:
            request = flows.submit_csr(owner=owner, data=data, device_name=options["device"])
        except (RequestRefused, flows.FlowError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"submitted {request.key_description} request for {options['user']}; request id:")
        self.stdout.write(str(request.pk))
