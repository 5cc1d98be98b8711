from __future__ import annotations

import argparse
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.pki.errors import CAKeyError
from ca.services import scep
from ca.signer import client as signer_client


class Command(BaseCommand):
    help = (
        "Show the SCEP identity of a CA (the CA itself when its key is an RSA key file; else, for an EC CA "
        "or a CA whose key is in a PKCS#11 token, its RSA RA certificate, "
        "made now if there is none or it expires within 30 days), or make a new RA with --new. The last "
        "line is the SHA-256 fingerprint of the certificate SCEP clients encrypt to (scepclient "
        "-ca-fingerprint). With the signer (ENROLL_SIGNER_SOCKET) every CA answers through an RA, which "
        "only this command makes: run it as the signer's user, with the signer's environment."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ca", help="the CA's slug (default: the default CA)")
        parser.add_argument(
            "--new",
            action="store_true",
            help="make a new RA certificate now (an EC or token CA's), e.g. to rotate it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        query = CertificateAuthority.objects.all()
        ca = (
            query.filter(slug=options["ca"]).first()
            if options["ca"]
            else query.filter(is_default=True).first()
        )
        if ca is None:
            raise CommandError(
                f"There is no CA with the slug '{options['ca']}'."
                if options["ca"]
                else "There is no default CA."
            )
        # With the signer, the web side never makes an RA (it holds no key): this command does, as the
        # signer's user, opening the CA key itself as the signer does.
        was, signer_client.role.signer = signer_client.role.signer, bool(settings.ENROLL_SIGNER_SOCKET)
        try:
            if options["new"]:
                identity_for = scep.identity_for(ca=ca)
                if identity_for.ra is None:
                    raise CommandError(
                        f"CA {ca.slug} has an RSA key file: it decrypts and signs SCEP itself, no RA."
                    )
                scep.create_ra(ca=ca)
            identity = scep.identity_for(ca=ca)
        except (CAError, CAKeyError) as exc:
            signer = bool(settings.ENROLL_SIGNER_SOCKET)
            hint = " (with the signer, run scep_ra as the signer's user)" if signer else ""
            raise CommandError(f"{exc}{hint}") from None
        finally:
            signer_client.role.signer = was
        if identity.ra is None:
            self.stdout.write(f"CA {ca.slug} decrypts and signs SCEP itself (RSA key file): {ca.subject}")
            self.stdout.write(ca.fingerprint_sha256)
            return
        ra = identity.ra
        self.stdout.write(
            f"SCEP RA of CA {ca.slug}: {ra.subject}, serial {ra.serial}, valid until {ra.not_after:%Y-%m-%d}"
        )
        self.stdout.write(ra.fingerprint_sha256)
