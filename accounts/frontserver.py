"""The certificate-login settings about the front server: the header names it forwards.

Django-free (no models, no app registry), so one set of rules serves both places that read these values:
``enroll/settings.py`` checks the environment at start (a bad value stops the start), and
:mod:`accounts.certlogin` checks the settings at run time (another project may set them in Python). Which
front servers are trusted is :mod:`accounts.proxies`.
"""

from __future__ import annotations

import re

from django.core.exceptions import ImproperlyConfigured

DEFAULT_VERIFY_HEADER = "X-SSL-Client-Verify"
DEFAULT_CERT_HEADER = "X-SSL-Client-Cert"
DEFAULT_SERIAL_HEADER = "X-SSL-Client-Serial"

_HEADER_NAME = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")


def check_header_name(name: object, *, setting: str) -> str:
    """``name`` if it is a usable HTTP header name (letters, digits and dashes), else ImproperlyConfigured."""
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise ImproperlyConfigured(
            f"{setting}={name!r} is not a usable header name: use letters, digits and dashes only "
            "(names with underscores are dropped by nginx and cannot be told apart in WSGI)."
        )
    return name
