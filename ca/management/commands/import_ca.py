from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.management import pkcs11_options
from ca.pki.errors import CAKeyError
from ca.services.authorities import import_ca


class Command(BaseCommand):
    help = (
        "Import an existing CA certificate and key. The key may be unencrypted or encrypted with the "
        "CA passphrase (ENROLL_CA_PASSPHRASE); it is stored encrypted with that passphrase. Or point the CA "
        "at its existing key in a PKCS#11 token: --pkcs11-module, --pkcs11-token and --pkcs11-key LABEL."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--cert", required=True, type=Path, help="CA certificate, PEM or DER.")
        parser.add_argument("--key", type=Path, help="CA private key, PEM or DER (or --pkcs11-key).")
        parser.add_argument("--slug", help="Short name used in URLs (default: from the CN).")
        parser.add_argument(
            "--default", action="store_true", help="Make this the CA that issues client certificates."
        )
        pkcs11_options.add_arguments(parser)
        parser.add_argument("--pkcs11-key", metavar="LABEL", help="the label of the CA's key in the token")

    def handle(self, *args: Any, **options: Any) -> None:
        token = pkcs11_options.placement(options, required=bool(options["pkcs11_key"]))
        if (options["key"] is None) == (token is None):
            raise CommandError("Give the CA's key: either --key FILE or --pkcs11-key LABEL with its token.")
        if token is not None and not options["pkcs11_key"]:
            raise CommandError("Name the key in the token: --pkcs11-key LABEL.")
        try:
            cert_pem = options["cert"].read_bytes()
            key_pem = options["key"].read_bytes() if options["key"] is not None else None
        except OSError as exc:
            raise CommandError(f"{exc.filename}: {exc.strerror}") from None
        try:
            ca = import_ca(
                cert_pem=cert_pem,
                key_pem=key_pem,
                token=token,
                token_label=options["pkcs11_key"] or "",
                key_passphrase=settings.ENROLL_CA_PASSPHRASE or None,
                slug=options["slug"],
                make_default=True if options["default"] else None,
            )
        except (CAError, CAKeyError) as exc:
            raise CommandError(str(exc)) from None
        parent = f", under {ca.parent.slug}" if ca.parent else ""
        self.stdout.write(f"imported CA {ca.name}{parent}, valid until {ca.not_after:%Y-%m-%d}")
        self.stdout.write(ca.slug)
