from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.services.crl import current_crl, publish_crl


class Command(BaseCommand):
    help = (
        "Sign and publish a new CRL (for one CA with --ca, else for every CA) and print its number. "
        "Safe to run from cron; with --if-stale only CRLs past half their lifetime are re-signed."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ca", metavar="SLUG")
        parser.add_argument("--if-stale", action="store_true", help="Keep CRLs that are still fresh.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["ca"]:
            authorities = list(CertificateAuthority.objects.filter(slug=options["ca"]))
            if not authorities:
                raise CommandError(f"There is no CA with the slug '{options['ca']}'.")
        else:
            authorities = list(CertificateAuthority.objects.all())
            if not authorities:
                raise CommandError("There is no CA yet; create one with manage.py init_ca --name NAME.")
        for ca in authorities:
            try:
                crl = current_crl(ca=ca) if options["if_stale"] else publish_crl(ca=ca)
            except CAError as exc:
                raise CommandError(f"CA {ca.slug}: {exc}") from None
            self.stdout.write(str(crl.number) if options["ca"] else f"{ca.slug} {crl.number}")
