from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts import provisioning

#: A password file holds one line; anything longer than this is not a password file.
MAX_PASSWORD_FILE_BYTES = 4096


def read_password(path: str) -> str:
    """The first line of ``path`` ("-": standard input), without its line end."""
    try:
        if path == "-":
            data = sys.stdin.read(MAX_PASSWORD_FILE_BYTES + 1)
        else:
            data = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read the password file {path}: {exc}") from None
    if len(data) > MAX_PASSWORD_FILE_BYTES:
        raise CommandError(f"The password file {path} is too long: put the password alone on its first line.")
    password = data.splitlines()[0] if data else ""
    if not password:
        raise CommandError(f"The password file {path} is empty: put the password on its first line.")
    return password


class Command(BaseCommand):
    help = (
        "Create a portal account under the rules of sign-up (username, e-mail address, password). "
        "Without --password-file a random password is made and printed once. Without --verified the "
        "account is sent the verification link, as at sign-up."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", required=True, metavar="ADDRESS")
        parser.add_argument(
            "--verified",
            action="store_true",
            help="Mark the e-mail address verified now (the account may request certificates at once).",
        )
        parser.add_argument(
            "--password-file",
            metavar="FILE",
            help="Read the password from the first line of FILE (- for standard input).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = read_password(options["password_file"]) if options["password_file"] else None
        try:
            account = provisioning.create_user(
                username=options["username"],
                email=options["email"],
                password=password,
                verified=options["verified"],
            )
        except provisioning.Refused as refusal:
            raise CommandError(f"{refusal} Nothing was created.") from None
        user = account.user
        state = "verified" if account.verified else "not verified yet: the verification link was sent to it"
        self.stdout.write(f"created {user.get_username()} <{user.email}> (e-mail address {state})")
        if account.generated_password:
            self.stdout.write("password (shown once, not stored in clear):")
            self.stdout.write(account.generated_password)
