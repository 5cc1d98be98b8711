"""The PKCS#11 options the CA commands share (init_ca, import_ca, move_ca_key): which module, which token,
and where the user PIN is. The PIN is read from a file (``--pkcs11-pin-file``, else the file
``ENROLL_PKCS11_PIN_FILE`` names) or the environment's ``ENROLL_PKCS11_PIN``: never from the command line,
where other users of the machine could read it in the process list."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from ca.pki.errors import CAKeyError
from ca.services import keys
from ca.services.authorities import TokenPlacement


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PKCS#11 token (HSM)")
    group.add_argument(
        "--pkcs11-module",
        metavar="PATH",
        help="the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so for SoftHSM2",
    )
    group.add_argument("--pkcs11-token", metavar="LABEL", help="the token's label")
    group.add_argument(
        "--pkcs11-pin-file",
        metavar="FILE",
        type=Path,
        help="a file holding the token's user PIN (default: ENROLL_PKCS11_PIN_FILE, or ENROLL_PKCS11_PIN)",
    )


def placement(options: dict[str, Any], *, required: bool = False) -> TokenPlacement | None:
    """The token the options name, with its PIN read now; None when no token is named (unless
    ``required``)."""
    module, token = options.get("pkcs11_module"), options.get("pkcs11_token")
    if not module and not token:
        if options.get("pkcs11_pin_file"):
            raise CommandError("--pkcs11-pin-file needs --pkcs11-module and --pkcs11-token.")
        if required:
            raise CommandError("Name the token: --pkcs11-module PATH --pkcs11-token LABEL.")
        return None
    if not module or not token:
        raise CommandError("Give both --pkcs11-module PATH and --pkcs11-token LABEL.")
    try:
        pin_file: Path | None = options.get("pkcs11_pin_file")
        pin = keys.read_pin_file(pin_file) if pin_file else keys.token_pin()
    except CAKeyError as exc:
        raise CommandError(str(exc)) from None
    return TokenPlacement(module_path=str(module), token=str(token), pin=pin)


def required_placement(options: dict[str, Any]) -> TokenPlacement:
    """The token the options name (a command that needs one)."""
    token = placement(options, required=True)
    if token is None:
        raise CommandError("Name the token: --pkcs11-module PATH --pkcs11-token LABEL.")
    return token
