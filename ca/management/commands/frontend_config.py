from __future__ import annotations

import argparse
import shlex
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.template.loader import render_to_string

from ca.models import CertificateAuthority

#: Each kind and its template in templates/ca/frontserver/ (front server: as in accounts/frontserver.py).
KINDS = {"nginx": "nginx.conf", "apache": "apache.conf", "node": "node.js", "systemd": "systemd.txt"}


class Command(BaseCommand):
    help = (
        "Print a ready, commented configuration for a front server that checks this portal's client "
        "certificates: nginx, apache, node, or systemd units running enroll-crl-sync."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("--server-name", default="app.example.com", help="the application's host name")
        parser.add_argument("--port", type=int, default=443)
        parser.add_argument("--upstream", default="http://127.0.0.1:8080", help="where requests are proxied")
        parser.add_argument(
            "--tls-cert", default="/etc/ssl/app/fullchain.pem", help="the server's certificate"
        )
        parser.add_argument("--tls-key", default="/etc/ssl/app/privkey.pem", help="the server's key")
        parser.add_argument(
            "--ca-bundle", default="/etc/enroll/client-ca.pem", help="trusted client CAs (PEM)"
        )
        parser.add_argument("--crl-bundle", default="/etc/enroll/client-crl.pem", help="CRL bundle (PEM)")
        parser.add_argument("--ca", metavar="SLUG", help="the issuing CA (default: the default CA)")
        parser.add_argument(
            "--node", default="%H", help="name reported by the sync (systemd: %%H = host name)"
        )
        parser.add_argument("--reload-command", help="for systemd: what reloads the server after a new CRL")

    def handle(self, *args: Any, **options: Any) -> None:
        issuing = (
            CertificateAuthority.objects.filter(slug=options["ca"]).first()
            if options["ca"]
            else CertificateAuthority.objects.filter(is_default=True).first()
        )
        if issuing is None:
            raise CommandError(
                f"There is no CA '{options['ca']}'."
                if options["ca"]
                else "There is no CA yet; run init_ca first."
            )
        chain = issuing.chain()
        authorities = [
            {
                "slug": ca.slug,
                "cert_url": ca.public_url("ca:cert-pem"),
                "crl_url": ca.public_url("ca:crl-pem"),
                "ocsp_url": ca.public_url("ca:ocsp"),
            }
            for ca in reversed(chain)
        ]
        reload_command = options["reload_command"] or {
            "nginx": "nginx -s reload",
            "apache": "apachectl -k graceful",
        }.get(options["kind"], "systemctl reload nginx")
        sync = ["enroll-crl-sync"]
        for ca in authorities:
            sync += ["--url", ca["crl_url"]]
        sync += [
            "--ca-file",
            options["ca_bundle"],
            "--output",
            options["crl_bundle"],
            "--node",
            options["node"],
        ]
        sync += ["--reload-command", reload_command]
        context = {
            **options,
            "portal_url": settings.ENROLL_PUBLIC_URL,
            "authorities": authorities,
            "issuing": authorities[-1],
            "depth": len(chain),
            "ocsp_validity": settings.ENROLL_OCSP_VALIDITY_SECONDS,
            "sync_command": shlex.join(sync).replace("'%H'", "%H"),
        }
        self.stdout.write(render_to_string(f"ca/frontserver/{KINDS[options['kind']]}", context), ending="")
