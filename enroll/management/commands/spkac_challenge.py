from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from enroll import challenges
from enroll.management.commands._common import get_user


class Command(BaseCommand):
    help = (
        "Hand out a fresh SPKAC challenge for a user (single use, expires in 30 minutes, valid only for "
        "submit_spkac). Prints the challenge last."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", required=True, metavar="USERNAME")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user(options["user"])
        challenge = challenges.issue(owner=owner, binding=challenges.COMMAND_LINE_BINDING)
        minutes = challenges.CHALLENGE_LIFETIME_MINUTES
        self.stdout.write(
            f"challenge for {options['user']}, valid once for {minutes} minutes "
            f"(until {challenge.expires_at:%Y-%m-%d %H:%M} UTC); sign it with: "
            f"openssl spkac -key KEY -challenge {challenge.value} -digest sha256"
        )
        self.stdout.write(challenge.value)
