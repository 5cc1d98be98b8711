from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.management import pkcs11_options
from ca.models import CertificateAuthority
from ca.pki.errors import CAKeyError
from ca.pki.keys import CAKeyType
from ca.services.authorities import create_ca


class Command(BaseCommand):
    help = (
        "Create a CA: a root, or an intermediate under --parent; its key in an encrypted file, or generated "
        "inside a PKCS#11 token (--pkcs11-module, --pkcs11-token, --pkcs11-pin-file). Prints the new CA's "
        "slug last."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", required=True, help="Common name of the CA, e.g. 'Example Client CA'.")
        parser.add_argument(
            "--key-type", choices=[t.value for t in CAKeyType], default=CAKeyType.EC_P256.value
        )
        parser.add_argument("--days", type=int, default=3650, help="Validity in days (default 3650).")
        parser.add_argument("--parent", metavar="SLUG", help="Make an intermediate signed by this CA.")
        parser.add_argument("--slug", help="Short name used in URLs (default: from --name).")
        parser.add_argument(
            "--default", action="store_true", help="Make this the CA that issues client certificates."
        )
        pkcs11_options.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["days"] <= 36500:
            raise CommandError("--days must be between 1 and 36500.")
        parent = None
        if options["parent"]:
            parent = CertificateAuthority.objects.filter(slug=options["parent"]).first()
            if parent is None:
                raise CommandError(f"There is no CA with the slug '{options['parent']}'.")
        try:
            ca = create_ca(
                name=options["name"],
                key_type=CAKeyType(options["key_type"]),
                days=options["days"],
                parent=parent,
                slug=options["slug"],
                make_default=True if options["default"] else None,
                token=pkcs11_options.placement(options),
            )
        except (CAError, CAKeyError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"created CA {ca.name}, subject {ca.subject}, valid until {ca.not_after:%Y-%m-%d}"
            + (", issues client certificates" if ca.is_default else "")
            + (f", key in PKCS#11 token '{options['pkcs11_token']}'" if ca.key_in_token else "")
        )
        self.stdout.write(ca.slug)
