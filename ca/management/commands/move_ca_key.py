from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.management import pkcs11_options
from ca.models import CertificateAuthority
from ca.pki.errors import CAKeyError
from ca.services.authorities import move_ca_key


class Command(BaseCommand):
    help = (
        "Move a CA's key file into a PKCS#11 token: the key is imported as sensitive and not extractable, a "
        "test signature must verify with the CA certificate, the CA then signs through the token and its key "
        "file is deleted. Back up the key file first if the token cannot be backed up."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("slug", help="the CA's slug")
        pkcs11_options.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        ca = CertificateAuthority.objects.filter(slug=options["slug"]).first()
        if ca is None:
            raise CommandError(f"There is no CA with the slug '{options['slug']}'.")
        token = pkcs11_options.required_placement(options)
        try:
            moved = move_ca_key(ca=ca, token=token)
        except (CAError, CAKeyError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"the key of CA {moved.slug} is now in PKCS#11 token '{token.token}'; its key file was deleted"
        )
        self.stdout.write(moved.key_file)
