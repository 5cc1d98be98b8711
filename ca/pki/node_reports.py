"""Signed install reports from front servers (``enroll-crl-sync --node NAME --token-file FILE``).

A front server tells the portal which CRL it has *installed* (verified, written, and its server reloaded),
never merely fetched: fetching proves nothing, anyone can fetch. Each registered front server ("node") has
an Ed25519 key pair (RFC 8032); the portal keeps only the public key, the node keeps the private key in
its token file (the 32-byte private key, base64, alone on one line).

Wire format, version 1 (both sides use this module; the sync has no Django):

* ``POST`` to the report URL (``/pki/report`` beside the CRL URLs), plain HTTP or HTTPS alike: the
  signature, not the transport, authenticates the report, as with the CRLs themselves.
* Body: one UTF-8 JSON object (at most :data:`MAX_REPORT_BYTES`)::

      {"type": "enroll-crl-report/1", "node": "web1", "timestamp": 1796476800,
       "nonce": "<32 hex digits>", "interval": 2, "heartbeat": 20,
       "outcome": "installed" | "unchanged" | "failed", "error": "",
       "crls": [{"authority_key_id": "<hex>", "number": 42}, ...]}

  ``crls`` lists what the front server holds *after* the run, one entry per CA, named by the CRL's
  authorityKeyIdentifier (RFC 5280 5.2.1), which stays distinct when a CA is re-keyed under the same name.
  ``interval`` is how often the node polls and ``heartbeat`` the longest it stays silent (seconds).
  ``error`` says what went wrong when ``outcome`` is ``failed`` (a fetch, a check, a write, the reload).
* Header :data:`SIGNATURE_HEADER`: the base64 Ed25519 signature of the exact body bytes. The body names
  the node and the report type, so a signature cannot be moved to another node or another message.

The portal refuses a report from an unknown node, with a bad signature, with a timestamp more than
:data:`MAX_CLOCK_SKEW` seconds off its clock, or with a nonce it has seen from that node; so a recorded
report cannot be replayed, and an old one cannot be sent late.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

REPORT_TYPE = "enroll-crl-report/1"
SIGNATURE_HEADER = "X-Enroll-Signature"
CONTENT_TYPE = "application/json"
#: Seconds a report's timestamp may differ from the portal's clock (either way).
MAX_CLOCK_SKEW = 120
MAX_REPORT_BYTES = 64 * 1024
NONCE_BYTES = 16
#: At most this many CRLs in one report (a chain is a handful of CAs).
MAX_CRLS = 64
MAX_ERROR_CHARS = 500
#: Node names: as host names, and safe in logs, URLs and file names.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_KEY_ID = re.compile(r"[0-9a-f]{2,128}")
_NONCE = re.compile(rf"[0-9a-f]{{{2 * NONCE_BYTES}}}")


class ReportOutcome(enum.StrEnum):
    """What the node's run did: installed a new CRL bundle, found it current, or failed."""

    INSTALLED = "installed"
    UNCHANGED = "unchanged"
    FAILED = "failed"


class ReportProblem(enum.StrEnum):
    """Why a report or a token was refused (the portal maps these to HTTP status codes)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    CLOCK_SKEW = "clock_skew"
    BAD_TOKEN = "bad_token"  # noqa: S105 (a refusal code, not a secret)


class ReportError(ValueError):
    """A report or token that cannot be used; the message says what is wrong, in plain words."""

    def __init__(self, problem: ReportProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class InstalledCrl:
    """One CA's CRL the node holds: the CRL's authorityKeyIdentifier (lower-case hex) and its cRLNumber."""

    authority_key_id: str
    number: int


@dataclass(frozen=True, slots=True)
class Report:
    node: str
    timestamp: int
    nonce: str
    interval: float
    heartbeat: float
    outcome: ReportOutcome
    error: str
    crls: tuple[InstalledCrl, ...]


# --- node keys and token files ----------------------------------------------------------------------


def new_node_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def token_for(key: Ed25519PrivateKey) -> str:
    """The token file's content: the raw 32-byte private key (RFC 8032 5.1.5), base64."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode("ascii")


def key_from_token(text: str) -> Ed25519PrivateKey:
    """Read a token (surrounding white space ignored); ReportError if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ReportError(ReportProblem.BAD_TOKEN, "the token file does not hold base64 text") from None
    if len(raw) != 32:
        raise ReportError(
            ReportProblem.BAD_TOKEN,
            "the token file does not hold a node key (32 bytes, base64) as manage.py frontserver printed",
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key the portal stores for the node."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


# --- building and signing (the node) -----------------------------------------------------------------


def sign_report(*, report: Report, key: Ed25519PrivateKey) -> tuple[bytes, str]:
    """The body bytes and the value of :data:`SIGNATURE_HEADER` for ``report``."""
    body = json.dumps(
        {
            "type": REPORT_TYPE,
            "node": report.node,
            "timestamp": report.timestamp,
            "nonce": report.nonce,
            "interval": report.interval,
            "heartbeat": report.heartbeat,
            "outcome": report.outcome.value,
            "error": report.error[:MAX_ERROR_CHARS],
            "crls": [{"authority_key_id": c.authority_key_id, "number": c.number} for c in report.crls],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    return body, base64.b64encode(key.sign(body)).decode("ascii")


# --- reading and checking (the portal) ---------------------------------------------------------------


def _malformed(message: str) -> ReportError:
    return ReportError(ReportProblem.MALFORMED, message)


def _seconds(value: object, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _malformed(f"'{name}' must be a number of seconds")
    if not 0 < value <= 86_400:
        raise _malformed(f"'{name}' must be between 0 and 86400 seconds")
    return float(value)


def _crls(value: object) -> tuple[InstalledCrl, ...]:
    if not isinstance(value, list) or len(value) > MAX_CRLS:
        raise _malformed(f"'crls' must be a list of at most {MAX_CRLS} entries")
    crls = []
    for item in value:
        if not isinstance(item, dict):
            raise _malformed("each entry of 'crls' must be an object")
        key_id, number = item.get("authority_key_id"), item.get("number")
        if not isinstance(key_id, str) or not _HEX_KEY_ID.fullmatch(key_id):
            raise _malformed("'authority_key_id' must be lower-case hex")
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**159:
            raise _malformed("'number' must be a CRL number (RFC 5280 5.2.3: a non-negative integer)")
        crls.append(InstalledCrl(key_id, number))
    return tuple(crls)


def parse_report(body: bytes) -> Report:
    """The report in ``body``, its signature NOT yet checked (the node name selects the key to check it).

    Raises ReportError (MALFORMED) for anything but a well-formed version 1 report.
    """
    if len(body) > MAX_REPORT_BYTES:
        raise _malformed(f"the report is larger than {MAX_REPORT_BYTES} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed("the report is not UTF-8 JSON") from None
    if not isinstance(data, dict) or data.get("type") != REPORT_TYPE:
        raise _malformed(f"the report is not of type {REPORT_TYPE}")
    node, timestamp, nonce = data.get("node"), data.get("timestamp"), data.get("nonce")
    if not isinstance(node, str) or not NODE_NAME.fullmatch(node):
        raise _malformed("'node' must be a front server name (letters, digits, '.', '_', '-')")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise _malformed("'timestamp' must be the Unix time in whole seconds")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise _malformed(f"'nonce' must be {2 * NONCE_BYTES} lower-case hex digits")
    try:
        outcome = ReportOutcome(str(data.get("outcome")))
    except ValueError:
        raise _malformed("'outcome' must be installed, unchanged or failed") from None
    error = data.get("error", "")
    if not isinstance(error, str):
        raise _malformed("'error' must be text")
    return Report(
        node=node,
        timestamp=timestamp,
        nonce=nonce,
        interval=_seconds(data.get("interval"), name="interval"),
        heartbeat=_seconds(data.get("heartbeat"), name="heartbeat"),
        outcome=outcome,
        error=error[:MAX_ERROR_CHARS],
        crls=_crls(data.get("crls")),
    )


def check_signature(*, body: bytes, signature: str, public_key: bytes) -> None:
    """Raise ReportError (BAD_SIGNATURE) unless ``signature`` is the node key's signature of ``body``."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, body)
    except (binascii.Error, ValueError, InvalidSignature):
        raise ReportError(
            ReportProblem.BAD_SIGNATURE,
            "the report's signature does not match this front server's key (rotated? check the token file)",
        ) from None


def check_clock(*, report: Report, now_timestamp: float, max_skew: int = MAX_CLOCK_SKEW) -> None:
    """Raise ReportError (CLOCK_SKEW) if the report's timestamp is more than ``max_skew`` seconds off."""
    offset = report.timestamp - now_timestamp
    if abs(offset) > max_skew:
        raise ReportError(
            ReportProblem.CLOCK_SKEW,
            f"the report's timestamp is {abs(offset):.0f} s {'ahead of' if offset > 0 else 'behind'} the "
            f"portal's clock (at most {max_skew} s allowed); check the clock (NTP) of both machines",
        )


def installed_from(pairs: Sequence[tuple[str, int]]) -> tuple[InstalledCrl, ...]:
    """Convenience for the sync: (authority key id hex, number) pairs as report entries."""
    return tuple(InstalledCrl(key_id, number) for key_id, number in pairs)
