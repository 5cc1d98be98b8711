from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.management import pkcs11_options
from ca.models import CertificateAuthority
from ca.pki.errors import CAKeyError
from ca.pki.keys import CAKeyType
from ca.services.rollover import fingerprint, rollover_ca


class Command(BaseCommand):
    help = (
        "Roll a CA over to a new key: a new key generation with the same name and subject, its own slug, CRL "
        "and certificate URLs, and link certificates between the old key and the new one (RFC 4210 4.4). New "
        "certificates are issued under the new key; the old one keeps signing its CRL. Prints the new slug "
        "last."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("slug", help="The CA to roll over (its newest key generation).")
        parser.add_argument(
            "--key-type",
            choices=[t.value for t in CAKeyType],
            help="The new key's type (default: the same as the old key's).",
        )
        parser.add_argument(
            "--days", type=int, help="Validity of the new certificate in days (default: as the old one's)."
        )
        parser.add_argument("--new-slug", help="The new generation's slug (default: <first slug>-<n>).")
        pkcs11_options.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["days"] is not None and not 1 <= options["days"] <= 36500:
            raise CommandError("--days must be between 1 and 36500.")
        ca = CertificateAuthority.objects.filter(slug=options["slug"]).first()
        if ca is None:
            raise CommandError(f"There is no CA with the slug '{options['slug']}'.")
        try:
            done = rollover_ca(
                ca=ca,
                key_type=CAKeyType(options["key_type"]) if options["key_type"] else None,
                days=options["days"],
                token=pkcs11_options.placement(options),
                slug=options["new_slug"],
            )
        except (CAError, CAKeyError) as exc:
            raise CommandError(str(exc)) from None
        old, new = done.old, done.new
        bundle = new.public_url("ca:bundle")
        lines = [
            f"rolled CA {new.name} over: key generation {new.slug} replaces {old.slug}",
            f"  new certificate: serial {new.serial}, valid until {new.not_after:%Y-%m-%d}, "
            f"SHA-256 {fingerprint(new.certificate)}"
            + (", key in a PKCS#11 token" if new.key_in_token else ""),
            f"  new CRL: {new.public_url('ca:crl-der')} (PEM: {new.public_url('ca:crl-pem')})",
            f"  old-signs-new link: serial {done.old_signs_new.serial_number:X}, SHA-256 "
            f"{fingerprint(done.old_signs_new)}",
            f"  new-signs-old link: serial {done.new_signs_old.serial_number:X}, SHA-256 "
            f"{fingerprint(done.new_signs_old)}",
            f"  {new.slug} issues from now on"
            + (" (the default CA)" if new.is_default else "")
            + f"; {old.slug} issues no more but keeps signing its CRL until its last certificate expires.",
            "next, on each front server:",
            f"  - running enroll-crl-sync with --ca-bundle-url {bundle}: nothing; its next run adds the new",
            "    certificate to its --ca-file (it chains to the old one), fetches the new CRL and reloads;",
            f"  - otherwise: download {bundle} as the trusted client CA file, add the CRL URL",
            f"    {new.public_url('ca:crl-pem')} to the sync, and reload the server.",
            "check the front servers' health (/pki/health.json) shows the new CRL installed.",
            new.slug,
        ]
        self.stdout.write("\n".join(lines))
