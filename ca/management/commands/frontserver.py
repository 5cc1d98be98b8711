"""``manage.py frontserver add|list|rotate|remove``: the front servers that send signed install reports.

A thin wrapper around :mod:`ca.services.frontservers`. ``add`` and ``rotate`` print the node's token alone
on the last line of their output: it is shown once, the portal keeps only the public key.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.services import frontservers


def _actor() -> str:
    try:
        return f"{getpass.getuser()} (manage.py frontserver)"
    except (KeyError, OSError):
        return "manage.py frontserver"


class Command(BaseCommand):
    help = (
        "Register, list, re-key or remove the front servers whose signed reports say which CRL they "
        "installed (enroll-crl-sync --node NAME --token-file FILE)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="add|list|rotate|remove")
        add = actions.add_parser("add", help="register a front server and print its token")
        add.add_argument("name", help="the front server's name, e.g. its host name")
        add.add_argument(
            "--ca",
            metavar="SLUG",
            action="append",
            default=[],
            help="a CA whose CRL it must carry (repeat for several; default: the default CA and its parents)",
        )
        actions.add_parser("list", help="the registered front servers and their health")
        rotate = actions.add_parser(
            "rotate", help="give a front server a new token (the old one stops working)"
        )
        rotate.add_argument("name")
        remove = actions.add_parser("remove", help="forget a front server")
        remove.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except CAError as exc:
            raise CommandError(str(exc)) from None

    def _token(self, name: str, token: str) -> None:
        self.stdout.write(
            f"Save the next line as the token file of {name} (mode 600, e.g. /etc/enroll/{name}.token); "
            "it is not shown again:"
        )
        self.stdout.write(token)

    def _add(self, options: dict[str, Any]) -> None:
        cas = None
        if options["ca"]:
            found = {ca.slug: ca for ca in CertificateAuthority.objects.filter(slug__in=options["ca"])}
            missing = [slug for slug in options["ca"] if slug not in found]
            if missing:
                raise CommandError(f"There is no CA with the slug '{missing[0]}'.")
            cas = [found[slug] for slug in dict.fromkeys(options["ca"])]
        server, token = frontservers.register(name=options["name"], cas=cas, actor=_actor())
        slugs = ", ".join(ca.slug for ca in server.cas.order_by("created_at", "pk"))
        self.stdout.write(f"Registered front server {server.name}; it must carry the CRLs of {slugs}.")
        self._token(server.name, token)

    def _list(self, options: dict[str, Any]) -> None:
        listing = frontservers.front_servers()
        if not listing:
            self.stdout.write("No front server registered: manage.py frontserver add NAME.")
            return
        for item in listing:
            server = item.server
            last = f"{server.last_report_at:%Y-%m-%d %H:%M:%S} UTC" if server.last_report_at else "never"
            outcome = server.last_outcome or "-"
            line = (
                f"{server.name}\tCAs: {', '.join(item.ca_slugs)}\tlast report: {last}\toutcome: {outcome}"
                f"\t{item.color.value} ({item.state.text})"
            )
            if server.last_error:
                line += f"\terror: {server.last_error}"
            self.stdout.write(line)

    def _rotate(self, options: dict[str, Any]) -> None:
        token = frontservers.rotate(name=options["name"], actor=_actor())
        self.stdout.write(f"Front server {options['name']} has a new key; its old token no longer works.")
        self._token(options["name"], token)

    def _remove(self, options: dict[str, Any]) -> None:
        frontservers.remove(name=options["name"], actor=_actor())
        self.stdout.write(f"Removed front server {options['name']}; its reports are refused from now on.")
