"""Parse and check a submitted PKCS#10 certificate signing request (RFC 2986).

Accepted encodings: PEM with the label ``CERTIFICATE REQUEST`` (RFC 7468 section 7) or ``NEW CERTIFICATE
REQUEST`` (what Java's keytool writes), DER, or bare base64 of the DER. Line breaks (LF or CRLF), blank
lines and spaces around the base64 are tolerated; exactly one request must be present.

Order of checks: size (before any parsing), private-key detection (refused, never echoed), encoding,
whether it is a request at all (input without PEM armour that does not start as a request does is "not a
request": random text, a certificate, a key, a public key; only armour or a request's own start make a
refusal "cut off" or "altered"), DER structure (one object: a request followed by anything is "more than
one"; anything else that leads is refused for what it is), the key's algorithm (by OID, before the key
is loaded: see :data:`.keypolicy.LOADABLE_KEY_ALGORITHMS`), the signature's hash (MD5 and SHA-1 cannot be
verified at all by OpenSSL 3, so they are named as the reason instead of a "bad signature"), then the
request's self-signature (RFC 2986 section 3: the signature over CertificationRequestInfo proves
possession of the private key), then key and signature policy.
Nothing from the request's subject or attributes is trusted: the CA builds subjects from the account.

One leniency, for certmonger's daemon: it writes the subject's CN as a PrintableString even when the name
holds ``_`` (outside PrintableString's alphabet), which ``cryptography`` refuses to read. A subject value
tagged PrintableString that holds only visible ASCII is read as a UTF8String instead (the tag byte
changed in a copy, :func:`_retag_subject`); the signature is still checked over the bytes as sent and the
request is stored as sent. Nothing else is relaxed: any other unreadable request is refused as before.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

from .der import _header, leading_tags
from .errors import Refusal, RequestRefused
from .keypolicy import (
    KeyInfo,
    check_key_encoding,
    check_public_key,
    check_reencoding,
    check_signature_hash,
)
from .submission import (
    BASE64_TEXT,
    base64_start,
    decode_base64,
    first_der_object,
    private_key_warning,
    refuse_deep_der,
    refuse_private_key_der,
    submitted_bytes,
)

#: Largest submission accepted, checked before any parsing. An RSA 4096 CSR in PEM is about 1.7 KiB.
MAX_SUBMISSION_BYTES = 16 * 1024

REQUEST_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")

#: A PEM block: its body runs to the next five dashes (possessive, never backtracked), so finding the
#: blocks takes linear time even in 16 KiB of -----BEGIN lines without -----END (a lazy ``.*?`` body
#: rescanned the rest of the text for every BEGIN line: 0.3 s).
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----((?:[^-]|-(?!----))*+)-----END \1-----")
_PEM_BEGIN = re.compile(rb"-----BEGIN ([^-\r\n]*)-----")

PRIVATE_KEY_WARNING = private_key_warning(
    instead="Submit the certificate request (CSR) made from it instead, for example: "
    "openssl req -new -key my.key -out my.csr."
)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request that passed every check. ``der`` is the canonical form to store."""

    der: bytes
    sha256: str
    csr: x509.CertificateSigningRequest
    key: KeyInfo
    requested_subject: str  # shown to administrators as "requested, ignored"

    @property
    def public_key_der(self) -> bytes:
        return self.csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


_CUT = (
    "The certificate request is incomplete: it was cut off before its end. Copy the whole file again, from "
    "the -----BEGIN CERTIFICATE REQUEST----- line to the -----END line, or upload the file itself."
)

_NO_END_LINE = (
    "The certificate request is incomplete: a -----BEGIN line has no matching -----END line. "
    "Copy the whole file again, including the last line, or upload the file itself."
)

_ALTERED = (
    "The certificate request was altered or cut: its text is not valid base64 any more. Copy the whole "
    "file again without changing it, from the -----BEGIN line to the -----END line, or upload the file "
    "itself."
)

_DAMAGED = (
    "The certificate request is damaged: it is not a valid PKCS#10 request and cannot be read. "
    "Make it again with openssl req or keytool -certreq and submit the whole file."
)

_NOT_A_REQUEST = (
    "This is not a certificate request. Submit the request (CSR) you made with openssl req or "
    "keytool -certreq: text that starts with -----BEGIN CERTIFICATE REQUEST-----, or the file itself."
)

_CERTIFICATE = (
    "This is a certificate, not a certificate request. Submit the CSR "
    "(-----BEGIN CERTIFICATE REQUEST-----) made with: openssl req -new -key my.key -out my.csr."
)

_TOO_DEEP = (
    "This is not a certificate request: its structure is nested far deeper than any real request's. "
    "Make it again with openssl req or keytool -certreq and submit the whole file."
)

#: How a PKCS#10 request starts (RFC 2986 4.2): CertificationRequest SEQUENCE > CertificationRequestInfo
#: SEQUENCE > version INTEGER. A value that does not start so never was a request (a certificate v3 starts
#: SEQUENCE, SEQUENCE, [0]; a public key SEQUENCE, SEQUENCE, OBJECT IDENTIFIER).
_REQUEST_START = (0x30, 0x30, 0x02)


def _request_shaped(der: bytes) -> bool:
    """Whether ``der`` starts as a PKCS#10 request does, even if it is cut short."""
    return leading_tags(der) == _REQUEST_START


def _from_pem(data: bytes) -> bytes:
    begins = _PEM_BEGIN.findall(data)
    if any(b"PRIVATE KEY" in label for label in begins):
        raise RequestRefused(Refusal.PRIVATE_KEY, PRIVATE_KEY_WARNING)
    blocks = _PEM_BLOCK.findall(data)
    if len(begins) > len(blocks) or not blocks:
        raise RequestRefused(Refusal.TRUNCATED, _NO_END_LINE, missing="end_line")
    if len(blocks) > 1:
        raise RequestRefused(
            Refusal.MULTIPLE,
            f"The text contains {len(blocks)} PEM blocks; submit exactly one certificate request at a time.",
            count=len(blocks),
        )
    label = blocks[0][0].decode("ascii")
    if label not in REQUEST_LABELS:
        return _other_label(label)
    return decode_base64(blocks[0][1], refusal=_ALTERED)


def _other_label(label: str) -> bytes:
    """Refuse a PEM block of another type than a request: a certificate, or anything else, by its label."""
    if label in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
        raise RequestRefused(Refusal.CERTIFICATE, _CERTIFICATE)
    raise RequestRefused(
        Refusal.NOT_A_REQUEST,
        f"This is a PEM block of type '{label}', not a certificate request. Submit the CSR "
        "(-----BEGIN CERTIFICATE REQUEST-----).",
        label=label,
    )


def _from_bare_base64(text: bytes) -> bytes:
    """The DER of base64 without PEM armour. Text that is not base64 is no request, unless it is the start
    of a request's base64 cut mid-line (then it is cut off)."""
    try:
        return decode_base64(text, refusal=_ALTERED)
    except RequestRefused:
        if _request_shaped(base64_start(text)):
            raise RequestRefused(Refusal.TRUNCATED, _CUT) from None
        raise RequestRefused(Refusal.NOT_A_REQUEST, _NOT_A_REQUEST) from None


def _decode(data: bytes) -> tuple[bytes, bool]:
    """The DER of the one object in ``data`` (raw DER is returned as it is, never stripped), and whether
    it came in PEM armour that says it is a request."""
    if data[:1] == b"\x30":
        return data, False
    data = data.strip()
    if b"-----BEGIN" in data:
        return _from_pem(data), True
    if BASE64_TEXT.fullmatch(data):
        return _from_bare_base64(data), False
    raise RequestRefused(Refusal.NOT_A_REQUEST, _NOT_A_REQUEST)


def _refuse_what_is_no_request(der: bytes) -> None:
    """Refuse DER without armour that does not even start as a request: a private key or a certificate for
    what it is, anything else as not a request (never as "cut off": it never was a request)."""
    if _request_shaped(der):
        return
    refuse_deep_der(der, refusal=_TOO_DEEP)
    refuse_private_key_der(der, warning=PRIVATE_KEY_WARNING)
    try:
        leading = first_der_object(der, cut=_CUT, unreadable=_DAMAGED)
    except RequestRefused:
        raise RequestRefused(Refusal.NOT_A_REQUEST, _NOT_A_REQUEST) from None
    if len(leading) != len(der):
        refuse_deep_der(leading, refusal=_TOO_DEEP)
        refuse_private_key_der(leading, warning=PRIVATE_KEY_WARNING)
    try:
        x509.load_der_x509_certificate(leading)
    except (ValueError, x509.InvalidVersion):
        raise RequestRefused(Refusal.NOT_A_REQUEST, _NOT_A_REQUEST) from None
    raise RequestRefused(Refusal.CERTIFICATE, _CERTIFICATE)


#: What a PrintableString may hold (X.680 41.4), and what certmonger puts in one besides (visible ASCII).
_PRINTABLE_STRING = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_VISIBLE_ASCII = frozenset(range(0x20, 0x7F))
_SEQUENCE, _SET, _PRINTABLE_STRING_TAG, _UTF8_STRING_TAG = 0x30, 0x31, 0x13, 0x0C


def _elements(der: bytes, start: int, stop: int) -> list[tuple[int, int, int]] | None:
    """(offset, start of contents, end of contents) of each value from ``start`` to ``stop``; None if one
    cannot be read."""
    found: list[tuple[int, int, int]] = []
    offset = start
    while offset < stop:
        header = _header(der, offset, stop)
        if header is None:
            return None
        _constructed, contents, end = header
        found.append((offset, contents, end))
        offset = end
    return found


def _subject_values(der: bytes) -> list[int] | None:
    """The offsets of the subject's attribute values (RFC 2986 4.1: CertificationRequest >
    CertificationRequestInfo > version, subject Name > RDN SET > AttributeTypeAndValue > value), or None
    when ``der`` is not shaped so."""
    top = _elements(der, 0, len(der))
    if not top or len(top) != 1 or der[0] != _SEQUENCE:
        return None
    request = _elements(der, top[0][1], top[0][2])
    if not request or der[request[0][0]] != _SEQUENCE:
        return None
    info = _elements(der, request[0][1], request[0][2])
    if info is None or len(info) < 2 or der[info[1][0]] != _SEQUENCE:
        return None
    rdns = _elements(der, info[1][1], info[1][2])
    if rdns is None:
        return None
    offsets: list[int] = []
    for rdn, rdn_start, rdn_end in rdns:
        values = _elements(der, rdn_start, rdn_end) if der[rdn] == _SET else None
        if values is None:
            return None
        for value, value_start, value_end in values:
            pair = _elements(der, value_start, value_end) if der[value] == _SEQUENCE else None
            if pair is None or len(pair) != 2:
                return None
            offsets.append(pair[1][0])
    return offsets


def _retag_subject(der: bytes) -> bytes | None:
    """A copy of ``der`` where each subject value tagged PrintableString that holds visible ASCII outside
    PrintableString's alphabet (certmonger's ``CN=host_name``) is tagged UTF8String instead; None when
    there is no such value or the request is not shaped as one. Only those tag bytes change."""
    patched = bytearray(der)
    for offset in _subject_values(der) or []:
        header = _header(der, offset, len(der))
        if header is None or der[offset] != _PRINTABLE_STRING_TAG:
            continue
        characters = set(der[header[1] : header[2]])
        if characters <= _VISIBLE_ASCII and not characters <= _PRINTABLE_STRING:
            patched[offset] = _UTF8_STRING_TAG
    return bytes(patched) if patched != der else None


def _request_info(der: bytes) -> bytes:
    """The CertificationRequestInfo as sent: the bytes the request's signature is over."""
    top = _header(der, 0, len(der))
    info = _header(der, top[1], top[2]) if top is not None else None
    if top is None or info is None:
        raise RequestRefused(Refusal.MALFORMED, _DAMAGED)
    return der[top[1] : info[2]]


def _load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """The request (read with its subject retagged, :func:`_retag_subject`, if that is the one thing
    ``cryptography`` refuses in it), or RequestRefused saying what it is instead."""
    refuse_deep_der(der, refusal=_TOO_DEEP)
    refuse_private_key_der(der, warning=PRIVATE_KEY_WARNING)
    leading = first_der_object(der, cut=_CUT, unreadable=_DAMAGED)
    if len(leading) != len(der):
        # Refuse a leading private key, certificate or non-request for what it is; only a real request
        # followed by more data is "more than one".
        _load_csr(leading)
        raise RequestRefused(
            Refusal.MULTIPLE,
            "There is extra data after the certificate request; submit exactly one request.",
            count=2,
        )
    try:
        return x509.load_der_x509_csr(der)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError: a version other than v1
        pass
    if (retagged := _retag_subject(der)) is not None:
        try:
            return x509.load_der_x509_csr(retagged)
        except (ValueError, x509.InvalidVersion):
            pass
    try:
        x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        pass
    else:
        raise RequestRefused(Refusal.CERTIFICATE, _CERTIFICATE)
    raise RequestRefused(Refusal.MALFORMED, _DAMAGED)


def _spki_der(der: bytes) -> bytes:
    """The request's SubjectPublicKeyInfo (RFC 2986 section 4.1) as submitted, without loading the key."""
    try:
        info = asn1_csr.CertificationRequest.load(der)["certification_request_info"]
        return bytes(info["subject_pk_info"].dump())
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        raise RequestRefused(Refusal.MALFORMED, _DAMAGED) from None


def _signature_hash(csr: x509.CertificateSigningRequest) -> hashes.HashAlgorithm | None:
    """The hash of the request's signature algorithm; None for Ed25519/Ed448, unknown algorithms and
    RSASSA-PSS with missing or broken parameters (ValueError)."""
    try:
        return csr.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError):
        return None


def _signature_valid_over(csr: x509.CertificateSigningRequest, signed: bytes) -> bool | None:
    """Whether the request's signature verifies over ``signed`` with its own key (None: an algorithm or
    key this cannot verify), as ``is_signature_valid`` checks it over the request's own bytes."""
    key = csr.public_key()
    parameters = csr.signature_algorithm_parameters
    algorithm = csr.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and isinstance(parameters, padding.PKCS1v15 | padding.PSS):
            if algorithm is None:
                return None
            key.verify(csr.signature, signed, parameters, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(parameters, ec.ECDSA):
            key.verify(csr.signature, signed, parameters)
        elif isinstance(key, dsa.DSAPublicKey) and algorithm is not None:
            key.verify(csr.signature, signed, algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(csr.signature, signed)
        else:
            return None
    except InvalidSignature:
        return False
    return True


def _verify_self_signature(csr: x509.CertificateSigningRequest, *, as_sent: bytes | None = None) -> None:
    """Refuse a request whose signature does not verify; ``as_sent`` is the request's own DER when
    ``csr`` was read from a retagged copy (the signature is over the bytes as sent)."""
    try:
        valid = (
            csr.is_signature_valid if as_sent is None else _signature_valid_over(csr, _request_info(as_sent))
        )
    except (UnsupportedAlgorithm, ValueError):
        valid = None
    if valid is None:
        raise RequestRefused(
            Refusal.SIGNATURE_ALGORITHM,
            "The request's signature uses an algorithm the portal does not accept. Sign it with "
            "SHA-256 and an RSA or ECDSA key (for example: openssl req -new -sha256 ...).",
        )
    if not valid:
        raise RequestRefused(
            Refusal.BAD_SIGNATURE,
            "The request's signature does not match its public key: the request was altered after it "
            "was signed, or is damaged. Make a new request from your key and submit it unchanged.",
        )


def check_csr_der(*, der: bytes) -> ParsedRequest:
    """Check a DER-encoded CSR: one object, valid self-signature, key and signature policy.

    Used both at submission and again by the CA right before signing.
    """
    csr = _load_csr(der)
    spki_der = _spki_der(der)
    check_key_encoding(spki_der=spki_der)  # before anything loads the key
    hash_algorithm = _signature_hash(csr)
    if hash_algorithm is not None:
        # MD5 / SHA-1 signatures do not verify at all under OpenSSL 3: name the algorithm as the reason.
        check_signature_hash(algorithm=hash_algorithm)
    as_read = csr.tbs_certrequest_bytes != _request_info(der)  # read from a retagged copy
    _verify_self_signature(csr, as_sent=der if as_read else None)
    try:
        public_key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise RequestRefused(
            Refusal.KEY_TYPE,
            "The request's public key is of a type the portal does not accept. "
            "Use an ECDSA P-256 or RSA 3072 key.",
        ) from None
    check_reencoding(public_key=public_key, spki_der=spki_der)
    key = check_public_key(public_key=public_key)
    check_signature_hash(algorithm=hash_algorithm)
    try:
        requested_subject = csr.subject.rfc4514_string()
    except ValueError:
        requested_subject = "(unreadable)"
    return ParsedRequest(
        der=der,
        sha256=hashlib.sha256(der).hexdigest(),
        csr=csr,
        key=key,
        requested_subject=requested_subject,
    )


def parse_csr(*, data: bytes | str) -> ParsedRequest:
    """Parse a submission (PEM, DER or bare base64) into a checked request, or raise RequestRefused.

    The size cap is applied to the raw submission before anything else is looked at.
    """
    raw = submitted_bytes(
        data,
        limit=MAX_SUBMISSION_BYTES,
        what="a certificate request",
        advice="Submit only the CSR file.",
        empty="Nothing was submitted. Paste or upload your CSR file.",
    )
    der, armoured = _decode(raw)
    if not der:
        raise RequestRefused(Refusal.EMPTY, "The PEM block is empty. Paste the whole CSR file.")
    if not armoured:
        _refuse_what_is_no_request(der)
    return check_csr_der(der=der)
