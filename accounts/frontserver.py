"""The certificate-login settings about the front server: trusted proxies and header names.

Django-free (no models, no app registry), so one set of rules serves both places that read these values:
``enroll/settings.py`` checks the environment at start (a bad value stops the start), and
:mod:`accounts.certlogin` checks the settings at run time (another project may set them in Python).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

DEFAULT_VERIFY_HEADER = "X-SSL-Client-Verify"
DEFAULT_CERT_HEADER = "X-SSL-Client-Cert"
DEFAULT_SERIAL_HEADER = "X-SSL-Client-Serial"
#: ``ENROLL_TRUSTED_PROXIES`` entry that trusts a peer without an address (a Unix-socket connection).
UNIX_SOCKET = "unix"

_HEADER_NAME = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_header_name(name: object, *, setting: str) -> str:
    """``name`` if it is a usable HTTP header name (letters, digits and dashes), else ImproperlyConfigured."""
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise ImproperlyConfigured(
            f"{setting}={name!r} is not a usable header name: use letters, digits and dashes only "
            "(names with underscores are dropped by nginx and cannot be told apart in WSGI)."
        )
    return name


def parse_trusted_proxies(values: Iterable[object]) -> tuple[tuple[Network, ...], bool]:
    """The networks of ``ENROLL_TRUSTED_PROXIES`` and whether Unix-socket peers are trusted.

    Raises ImproperlyConfigured, naming the entry, for anything but an IP address, a network or ``unix``.
    """
    networks: list[Network] = []
    unix = False
    for value in values:
        item = str(value).strip()
        if item.lower() == UNIX_SOCKET:
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"ENROLL_TRUSTED_PROXIES: {item!r} is not an IP address or network ({exc}); "
                "write e.g. 127.0.0.1,10.0.0.0/8,::1 (or 'unix' for a Unix socket)."
            ) from None
    return tuple(networks), unix
