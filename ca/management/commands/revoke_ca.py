from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority, CrlPublication, RevocationReason
from ca.services.revocation import revoke_ca


class Command(BaseCommand):
    help = (
        "Revoke an issuing CA: its parent's CRL (published at once) lists it and its parent's OCSP answers "
        "revoked, so front servers refuse every certificate it issued; it stops issuing; owners are told. "
        "Prints the parent's new CRL number."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("slug", help="the CA to revoke (manage.py init_ca --parent made it)")
        parser.add_argument(
            "--reason",
            required=True,
            choices=[r.value for r in RevocationReason if r != RevocationReason.UNSPECIFIED],
            help="RFC 5280 5.3.1 reason, e.g. ca_compromise, cessation_of_operation, superseded",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ca = CertificateAuthority.objects.filter(slug=options["slug"]).first()
        if ca is None:
            raise CommandError(f"There is no CA with the slug '{options['slug']}'.")
        try:
            revoked = revoke_ca(
                ca=ca,
                reason=RevocationReason(options["reason"]),
                by_name=f"{getpass.getuser()} (command line)",
            )
        except CAError as exc:
            raise CommandError(str(exc)) from None
        assert revoked.parent is not None
        number = (
            CrlPublication.objects.filter(ca=revoked.parent_id)
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
        )
        parent = revoked.parent.slug
        self.stdout.write(
            f"revoked CA {revoked.slug} ({revoked.subject}); it no longer issues. CRL of {parent}:"
        )
        self.stdout.write(str(number))
