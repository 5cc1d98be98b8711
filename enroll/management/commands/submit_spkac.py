from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.pki.errors import RequestRefused
from ca.pki.spkac import MAX_SPKAC_BYTES
from enroll import challenges, flows
from enroll.management.commands._common import get_user, read_input


class Command(BaseCommand):
    help = (
        "Submit an SPKAC (the output of openssl spkac, a file or - for standard input) for a user. Its "
        "challenge must come from spkac_challenge for that user. Prints the request id last."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", required=True, metavar="USERNAME")
        parser.add_argument("file", help="SPKAC file (SPKAC=... as openssl spkac prints it), or - for stdin.")
        parser.add_argument(
            "--device",
            default="",
            metavar="NAME",
            help="The device the certificate is for (optional, at most 64 characters; not put into it).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user(options["user"])
        data = read_input(options["file"], limit=MAX_SPKAC_BYTES)
        try:
            request = flows.submit_spkac(
                owner=owner,
                data=data,
                session_binding=challenges.COMMAND_LINE_BINDING,
                device_name=options["device"],
            )
        except (RequestRefused, challenges.ChallengeRefused, flows.FlowError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"submitted SPKAC {request.key_description} request for {options['user']}; request id:"
        )
        self.stdout.write(str(request.pk))
