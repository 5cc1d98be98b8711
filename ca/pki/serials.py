"""Certificate serial numbers (RFC 5280 section 4.1.2.2).

Serials are positive integers of at most 20 octets, unique per CA. The CA/Browser Forum asks for at
least 64 bits of CSPRNG output; this module draws 159 bits (20 octets with the top bit clear, so the DER
INTEGER stays positive and within 20 octets).

The canonical text form is the one nginx prints in ``$ssl_client_serial`` and Apache in
``SSL_CLIENT_M_SERIAL``: upper-case hex, an even number of digits, no colons.
"""

from __future__ import annotations

import re
import secrets

MAX_SERIAL_OCTETS = 20
SERIAL_BITS = 8 * MAX_SERIAL_OCTETS - 1

_SEPARATORS = re.compile(r"[\s:]")
_HEX = re.compile(r"[0-9a-fA-F]+")


class SerialFormatError(ValueError):
    """A serial number given as text cannot be read."""


def new_serial() -> int:
    """A fresh random serial: 159 bits from the operating system's CSPRNG, never zero."""
    while True:
        serial = secrets.randbits(SERIAL_BITS)
        if serial.bit_length() > 64:
            return serial


def format_serial(*, serial: int) -> str:
    """Upper-case hex with an even number of digits, no colons (nginx ``$ssl_client_serial`` form)."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def format_serial_colons(*, serial: int) -> str:
    """Upper-case hex octets separated by colons, as ``openssl x509 -text`` and browsers show it."""
    text = format_serial(serial=serial)
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def parse_serial(*, text: str) -> int:
    """Read a serial written in hex, with or without colons or spaces, in any case, with optional 0x."""
    compact = _SEPARATORS.sub("", text.strip())
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    if not compact or not _HEX.fullmatch(compact):
        raise SerialFormatError(
            f"'{text[:80]}' is not a serial number: write it in hexadecimal, e.g. 4F:1A:... or 4F1A..."
        )
    value = int(compact, 16)
    if value <= 0 or value.bit_length() > 8 * MAX_SERIAL_OCTETS:
        raise SerialFormatError("A certificate serial number is a positive number of at most 20 octets.")
    return value
