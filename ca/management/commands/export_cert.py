from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.services.export import ALL_EXPORT_FORMATS, export_certificate
from ca.services.revocation import find_certificate


class Command(BaseCommand):
    help = "Write an issued certificate to standard output: pem, der, chain (PEM, leaf first) or pkcs7 (PEM)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("serial")
        parser.add_argument("--format", choices=ALL_EXPORT_FORMATS, default="pem")
        parser.add_argument("--ca", metavar="SLUG")

    def handle(self, *args: Any, **options: Any) -> None:
        ca = CertificateAuthority.objects.filter(slug=options["ca"]).first() if options["ca"] else None
        if options["ca"] and ca is None:
            raise CommandError(f"There is no CA with the slug '{options['ca']}'.")
        try:
            certificate = find_certificate(serial=options["serial"], ca=ca)
            export = export_certificate(certificate=certificate, fmt=options["format"])
        except CAError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.flush()
        out = getattr(self.stdout, "_out", sys.stdout)
        buffer = getattr(out, "buffer", None)
        if buffer is not None:
            buffer.write(export.content)
            buffer.flush()
        else:
            out.write(export.content.decode("latin-1"))
