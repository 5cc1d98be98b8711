"""What the CSR and SPKAC parsers (:mod:`.csr`, :mod:`.spkac`) share: the size cap applied before any
parsing, private-key detection, base64 reading and finding the first DER object.

Each parser passes its own words; the mechanics live here once.
"""

from __future__ import annotations

import base64
import binascii
import re

from asn1crypto import core, keys
from asn1crypto import parser as asn1_parser

from .der import TooDeep, check_depth
from .errors import Refusal, RequestRefused

#: Text that can only be base64 (whitespace anywhere): the test between "bare base64" and "not ours".
BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def submitted_bytes(data: bytes | str, *, limit: int, what: str, advice: str, empty: str) -> bytes:
    """The submission as bytes (a str counts in UTF-8), refused before any parsing if too large or blank."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if len(raw) > limit:
        raise RequestRefused(
            Refusal.TOO_LARGE,
            f"The submission is {len(raw)} bytes; {what} is at most {limit // 1024} KiB. {advice}",
            size=len(raw),
            limit_kib=limit // 1024,
        )
    if not raw.strip():
        raise RequestRefused(Refusal.EMPTY, empty)
    return raw


def private_key_warning(*, instead: str) -> str:
    """The refusal of a pasted private key; ``instead`` says what to submit and how to make it."""
    return (
        "This is a private key. Never send your private key to anyone, this portal included: it stays on "
        f"your computer. Nothing of it was stored. {instead} If this key was sent anywhere else, "
        "treat it as compromised and make a new one."
    )


class _OneAsymmetricKey(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no type hints
    """RFC 5958 OneAsymmetricKey (PKCS#8 PrivateKeyInfo v1, plus the public key of v2), of any algorithm:
    asn1crypto's PrivateKeyInfo knows only some algorithms and would let the others pass."""

    _fields = [
        ("version", core.Integer),
        ("private_key_algorithm", keys.PrivateKeyAlgorithm),
        ("private_key", core.OctetString),
        ("attributes", keys.Attributes, {"implicit": 0, "optional": True}),
        ("public_key", core.BitString, {"implicit": 1, "optional": True}),
    ]


#: The DER shapes of private keys: PKCS#8 (RFC 5958) plain and encrypted, PKCS#1 RSAPrivateKey (RFC 8017
#: A.1.2), SEC 1 ECPrivateKey (RFC 5915) and OpenSSL's DSA private key.
_PRIVATE_KEY_SHAPES = (
    _OneAsymmetricKey,
    keys.EncryptedPrivateKeyInfo,
    keys.RSAPrivateKey,
    keys.ECPrivateKey,
    keys.DSAPrivateKey,
)


def refuse_deep_der(der: bytes, *, refusal: str) -> None:
    """Refuse (MALFORMED, with ``refusal``) DER nested deeper than anything real (:mod:`.der`), before
    any recursive decoder sees it."""
    try:
        check_depth(der)
    except TooDeep:
        raise RequestRefused(Refusal.MALFORMED, refusal) from None


def refuse_private_key_der(der: bytes, *, warning: str) -> None:
    """Refuse DER that is a private key, encrypted or not (PKCS#8, PKCS#1, SEC 1, DSA).

    The key is recognised by its ASN.1 structure alone (asn1crypto, strict DER), never loaded: loading
    checks or completes the key, which anyone could make cost minutes (a 13 KB DSA or DH key whose public
    value is computed from 30000-bit numbers: 100 s; RSA key validation of an RSA 8192 key: 6 s).
    """
    for shape in _PRIVATE_KEY_SHAPES:
        try:
            _parsed = shape.load(der, strict=True).native  # parses every field, strictly
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError):
            continue
        raise RequestRefused(Refusal.PRIVATE_KEY, warning)


def decode_base64(text: bytes, *, refusal: str) -> bytes:
    """Strict base64 with whitespace anywhere; refused as BAD_ENCODING with ``refusal`` if invalid."""
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestRefused(Refusal.BAD_ENCODING, refusal) from None


def base64_start(text: bytes) -> bytes:
    """What the whole 4-character groups at the start of base64 ``text`` decode to (whitespace removed,
    stopping at the first character that is not base64): enough to tell what a damaged submission was
    meant to be; b"" if nothing decodes."""
    joined = b"".join(text.split())
    valid = re.match(rb"[A-Za-z0-9+/]*", joined)
    prefix = valid.group(0) if valid else b""
    try:
        return base64.b64decode(prefix[: len(prefix) - len(prefix) % 4], validate=True)
    except (binascii.Error, ValueError):
        return b""


def first_der_object(der: bytes, *, cut: str, unreadable: str) -> bytes:
    """The first DER object (X.690 TLV) of ``der``: refused as TRUNCATED with ``cut`` if it is cut short,
    as MALFORMED with ``unreadable`` if it cannot be read."""
    try:
        _class, _method, _tag, header, contents, trailer = asn1_parser.parse(der)
    except ValueError as exc:
        if "insufficient data" in str(exc).lower():
            raise RequestRefused(Refusal.TRUNCATED, cut) from None
        raise RequestRefused(Refusal.MALFORMED, unreadable) from None
    return der[: len(header) + len(contents) + len(trailer)]
