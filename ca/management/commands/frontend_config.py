from __future__ import annotations

import argparse
import ipaddress
import posixpath
import shlex
import sys
import urllib.parse
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.template.loader import render_to_string
from django.urls import reverse

from ca.models import CertificateAuthority

#: Each kind and its template in templates/ca/frontserver/ (front server: as in accounts/frontserver.py).
KINDS = {"nginx": "nginx.conf", "apache": "apache.conf", "node": "node.js", "systemd": "systemd.txt"}

#: ``signer``: not a front server but the portal host's own unit, the signer (ca/signer, docs/OPERATIONS.md
#: "The signer"), so that every systemd unit the portal needs comes from this one command.
SIGNER_TEMPLATE = "signer.service"

#: ``--devices``: the device server (EST and SCEP only, docs/DEVICES.md) of the kinds that proxy to the
#: portal. The node kind is an application server, not a proxy, and systemd is the CRL sync.
DEVICE_KINDS = {"nginx": "nginx-devices.conf", "apache": "apache-devices.conf"}

#: The device server's host name when ``--server-name`` is not given.
DEVICE_SERVER_NAME = "devices.example.com"

#: The servers ``systemd --server`` makes a sync service for, and the command that makes each one read
#: a new CRL bundle (Debian's unit names). None: the server watches the file itself (the generated
#: node.js), so the sync reloads nothing.
RELOAD_COMMANDS: dict[str, str | None] = {
    "nginx": "systemctl reload nginx",
    "apache": "systemctl reload apache2",
    "node": None,
}


#: How nginx learns of revocations (docs/FRONT-SERVERS.md, "CRL sync, OCSP or both"): the CRL bundle kept
#: current by enroll-crl-sync, the portal's OCSP responder asked during the handshake, or both.
REVOCATION_MODES = ("crl", "ocsp", "both")

#: nginx's shared OCSP cache: one answer per certificate and CA, kept until its nextUpdate.
OCSP_CACHE = "shared:enroll_ocsp:10m"


def needs_resolver(url: str) -> bool:
    """nginx resolves a host name in ``ssl_ocsp_responder`` with its own ``resolver`` only (not
    /etc/resolv.conf); an IP address needs none."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def command_lines(program: str, options: list[tuple[str, str]], *, indent: str) -> str:
    """``program --option value ...``, shell-quoted, one option a line with a trailing backslash (which
    both sh and systemd read as a continued line); systemd's ``%H`` (host name) stays unquoted."""
    parts = [shlex.quote(program)]
    parts += [f"{name} {shlex.quote(value)}".replace("'%H'", "%H") for name, value in options]
    return f" \\\n{indent}".join(parts)


class Command(BaseCommand):
    help = (
        "Print a ready, commented configuration for a front server that checks this portal's client "
        "certificates: nginx, apache, node, or the systemd service running enroll-crl-sync for one of them."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", choices=sorted([*KINDS, "signer"]))
        parser.add_argument(
            "--server",
            choices=sorted(RELOAD_COMMANDS),
            default="nginx",
            help="for systemd: the front server the sync keeps current (its reload command)",
        )
        parser.add_argument(
            "--devices",
            action="store_true",
            help="nginx or apache: the device server instead (EST and SCEP only, the client certificate "
            "asked for but optional, on its own host name or port; docs/DEVICES.md)",
        )
        parser.add_argument(
            "--server-name",
            help="the application's host name (default app.example.com; "
            f"{DEVICE_SERVER_NAME} with --devices)",
        )
        parser.add_argument("--port", type=int, default=443)
        parser.add_argument(
            "--http-port",
            type=int,
            default=80,
            help="with --devices: the plain-HTTP port for SCEP (0: HTTPS only)",
        )
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
            "--revocation",
            choices=REVOCATION_MODES,
            default="crl",
            help="for nginx: how revocations reach it: the CRL bundle kept current by enroll-crl-sync "
            "(default; survives a portal outage), the portal's OCSP responder (fails closed when the "
            "portal is unreachable), or both",
        )
        parser.add_argument(
            "--resolver",
            metavar="ADDRESS",
            help="for nginx with OCSP: the DNS server nginx resolves the responder's host name with "
            "(needed when ENROLL_PUBLIC_URL has a host name, e.g. 127.0.0.53 with systemd-resolved)",
        )
        parser.add_argument(
            "--node",
            default="%H",
            help="the registered node name (manage.py frontserver add NAME; systemd: %%H = host name)",
        )
        parser.add_argument(
            "--token-file", default="/etc/enroll/node.token", help="the node's token (its private key)"
        )
        parser.add_argument(
            "--sync-program",
            default="/opt/enroll/bin/enroll-crl-sync",
            help="for systemd: enroll-crl-sync's absolute path on the front server",
        )
        parser.add_argument(
            "--every", type=int, default=2, metavar="SECONDS", help="for systemd: how often the sync polls"
        )
        parser.add_argument(
            "--reload-command",
            help="for systemd: what reloads the server after a new CRL (overrides --server)",
        )
        parser.add_argument(
            "--signer-user", default="enroll-signer", help="for signer: the signer's own system user"
        )
        parser.add_argument(
            "--web-user", default="enroll", help="for signer: the user the web workers run as"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["kind"] == "signer":
            self.stdout.write(
                render_to_string(f"ca/frontserver/{SIGNER_TEMPLATE}", _signer(options)), ending=""
            )
            return
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
        if options["every"] < 1:
            raise CommandError("--every takes a whole number of seconds, at least 1.")
        devices = options["devices"]
        if devices and options["kind"] not in DEVICE_KINDS:
            raise CommandError(
                f"--devices makes a device server for nginx or apache (the proxies in front of the portal); "
                f"'{options['kind']}' is not one."
            )
        if devices and options["http_port"] == options["port"]:
            raise CommandError("--http-port must differ from --port (or be 0 for HTTPS only).")
        if options["server_name"] is None:
            options["server_name"] = DEVICE_SERVER_NAME if devices else "app.example.com"
        responder = settings.ENROLL_PUBLIC_URL + reverse("ca:responder")
        ocsp = options["kind"] == "nginx" and options["revocation"] != "crl" and not devices
        if ocsp and needs_resolver(responder) and not options["resolver"]:
            raise CommandError(
                f"nginx resolves the OCSP responder's host ({responder}) with its own DNS resolver only: "
                "add --resolver ADDRESS (e.g. 127.0.0.53 with systemd-resolved), or use an "
                "ENROLL_PUBLIC_URL with an IP address."
            )
        chain = issuing.chain()
        authorities = [
            {
                "slug": ca.slug,
                "cert_url": ca.public_url("ca:cert-pem"),
                "crl_url": ca.public_url("ca:crl-pem"),
            }
            for ca in reversed(chain)
        ]
        reload_command = options["reload_command"] or RELOAD_COMMANDS[options["server"]]
        fetch = [("--url", ca["crl_url"]) for ca in authorities]
        # a CA rolled over (manage.py rollover_ca): the new key generation joins --ca-file once it chains
        fetch.append(("--ca-bundle-url", issuing.public_url("ca:bundle")))
        fetch += [("--ca-file", options["ca_bundle"]), ("--output", options["crl_bundle"])]
        service = [
            *fetch,
            ("--every", str(options["every"])),
            ("--node", options["node"]),
            ("--token-file", options["token_file"]),
        ]
        if reload_command:
            service.append(("--reload-command", reload_command))
        context = {
            **options,
            "portal_url": settings.ENROLL_PUBLIC_URL,
            "authorities": authorities,
            "issuing": authorities[-1],
            "depth": len(chain),
            "ocsp_validity": settings.ENROLL_OCSP_VALIDITY_SECONDS,
            "ocsp_responder": responder,
            "ocsp_cache": OCSP_CACHE,
            "use_crl": options["revocation"] != "ocsp",
            "use_ocsp": options["revocation"] != "crl",
            "resolver": options["resolver"],
            "responder_by_name": needs_resolver(responder),
            "reload": reload_command,
            # The first run, before the server runs: fetch and install only, no reload, no report.
            "first_sync_command": command_lines(options["sync_program"], fetch, indent="#             "),
            "sync_command": command_lines(options["sync_program"], service, indent="    "),
            # what the sync writes: the CRL bundle and the CA file (a new key generation of a CA)
            "crl_folder": " ".join(
                sorted({posixpath.dirname(options[name]) or "/" for name in ("crl_bundle", "ca_bundle")})
            ),
            "heartbeat": 10 * options["every"],
        }
        template = DEVICE_KINDS[options["kind"]] if devices else KINDS[options["kind"]]
        self.stdout.write(render_to_string(f"ca/frontserver/{template}", context), ending="")


def _signer(options: dict[str, Any]) -> dict[str, Any]:
    """The signer unit's context: its user, the socket under systemd's runtime folder, this checkout."""
    for name in ("signer_user", "web_user"):
        if not options[name].replace("-", "").replace("_", "").isalnum():
            raise CommandError(
                f"--{name.replace('_', '-')} must be a plain user name, not {options[name]!r}."
            )
    runtime_directory = options["signer_user"]
    socket_dir = f"/run/{runtime_directory}"
    return {
        **options,
        "runtime_directory": runtime_directory,
        "socket_dir": socket_dir,
        "socket": f"{socket_dir}/signer.sock",
        "project_dir": str(settings.BASE_DIR),
        "python": sys.executable,
        "data_dir": str(settings.DATA_DIR),
        "key_dir": str(settings.ENROLL_CA_KEY_DIR),
    }
