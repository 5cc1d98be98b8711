from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority, CrlPublication, RevocationReason
from ca.services.revocation import find_certificate, revoke_certificate


class Command(BaseCommand):
    help = (
        "Revoke a certificate by serial (hex, colons optional) and publish a new CRL. Prints the CRL number."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("serial")
        parser.add_argument(
            "--reason",
            required=True,
            choices=[r.value for r in RevocationReason if r != RevocationReason.UNSPECIFIED],
        )
        parser.add_argument("--ca", metavar="SLUG", help="Only needed if several CAs issued this serial.")

    def handle(self, *args: Any, **options: Any) -> None:
        ca = None
        if options["ca"]:
            ca = CertificateAuthority.objects.filter(slug=options["ca"]).first()
            if ca is None:
                raise CommandError(f"There is no CA with the slug '{options['ca']}'.")
        try:
            certificate = find_certificate(serial=options["serial"], ca=ca)
            # publishes the CRL when the revocation commits, before it returns
            revoke_certificate(certificate=certificate, reason=RevocationReason(options["reason"]))
        except CAError as exc:
            raise CommandError(str(exc)) from None
        number = (
            CrlPublication.objects.filter(ca=certificate.ca)
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
        )
        self.stdout.write(
            f"revoked {certificate.serial} ({certificate.subject}); CRL of {certificate.ca.slug}:"
        )
        self.stdout.write(str(number))
