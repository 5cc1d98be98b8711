"""PEM armor (RFC 7468): base64 in 64-character lines between BEGIN/END lines."""

from __future__ import annotations

import base64


def pem_armor(*, der: bytes, label: str) -> bytes:
    """Wrap DER in PEM with the given label (e.g. ``X509 CRL``, ``CERTIFICATE``)."""
    encoded = base64.b64encode(der)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return b"\n".join([f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""])
