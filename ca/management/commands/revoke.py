from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority, CrlPublication, RevocationReason
from ca.services.revocation import find_certificate, revoke_certificate, revoke_serial


class Command(BaseCommand):
    help = (
        "Revoke a certificate by serial (hex, colons optional), or a serial reserved and never stored, and "
        "publish a new CRL. Prints the CRL number."
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
        reason = RevocationReason(options["reason"])
        try:
            certificate = find_certificate(serial=options["serial"], ca=ca)
        except CAError as exc:
            # a serial reserved and never stored (a crash between signing and storing) is revoked too
            try:
                reservation = revoke_serial(serial=options["serial"], reason=reason, ca=ca)
            except CAError:
                raise CommandError(str(exc)) from None
            self._report(
                reservation.ca, f"revoked reserved serial {reservation.serial} ({reservation.purpose})"
            )
            return
        try:
            # publishes the CRL when the revocation commits, before it returns
            revoke_certificate(certificate=certificate, reason=reason)
        except CAError as exc:
            raise CommandError(str(exc)) from None
        self._report(certificate.ca, f"revoked {certificate.serial} ({certificate.subject})")

    def _report(self, ca: CertificateAuthority, what: str) -> None:
        number = (
            CrlPublication.objects.filter(ca=ca).order_by("-number").values_list("number", flat=True).first()
        )
        self.stdout.write(f"{what}; CRL of {ca.slug}:")
        self.stdout.write(str(number))
