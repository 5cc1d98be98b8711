"""Parse and check a submitted PKCS#10 certificate signing request (RFC 2986).

Accepted encodings: PEM with the label ``CERTIFICATE REQUEST`` (RFC 7468 section 7) or ``NEW CERTIFICATE
REQUEST`` (what Java's keytool writes), DER, or bare base64 of the DER. Line breaks (LF or CRLF), blank
lines and spaces around the base64 are tolerated; exactly one request must be present.

Order of checks: size (before any parsing), private-key detection (refused, never echoed), encoding,
DER structure (one object: a request followed by anything is "more than one"; anything else that leads is
refused for what it is), the key's algorithm (by OID, before the key is loaded: see
:data:`.keypolicy.LOADABLE_KEY_ALGORITHMS`), the signature's hash (MD5 and SHA-1 cannot be verified at all
by OpenSSL 3, so they are named as the reason instead of a "bad signature"), then the request's
self-signature (RFC 2986 section 3: the signature over CertificationRequestInfo proves possession of the
private key), then key and signature policy.
Nothing from the request's subject or attributes is trusted: the CA builds subjects from the account.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

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


def _b64decode(text: bytes, *, what: str) -> bytes:
    return decode_base64(
        text,
        refusal=f"The {what} is not valid base64: it has been altered or cut. Copy the whole file again, "
        "from the -----BEGIN line to the -----END line.",
    )


def _from_pem(data: bytes) -> bytes:
    begins = _PEM_BEGIN.findall(data)
    if any(b"PRIVATE KEY" in label for label in begins):
        raise RequestRefused(Refusal.PRIVATE_KEY, PRIVATE_KEY_WARNING)
    blocks = _PEM_BLOCK.findall(data)
    if len(begins) > len(blocks) or not blocks:
        raise RequestRefused(
            Refusal.TRUNCATED,
            "The request is incomplete: a -----BEGIN line has no matching -----END line. "
            "Copy the whole file, including the last line.",
        )
    if len(blocks) > 1:
        raise RequestRefused(
            Refusal.MULTIPLE,
            f"The text contains {len(blocks)} PEM blocks; submit exactly one certificate request at a time.",
        )
    label = blocks[0][0].decode("ascii")
    if label in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
        raise RequestRefused(
            Refusal.CERTIFICATE,
            "This is a certificate, not a certificate request. Submit the CSR "
            "(-----BEGIN CERTIFICATE REQUEST-----) made with: openssl req -new -key my.key -out my.csr.",
        )
    if label not in REQUEST_LABELS:
        raise RequestRefused(
            Refusal.NOT_A_REQUEST,
            f"This is a PEM block of type '{label}', not a certificate request. Submit the CSR "
            "(-----BEGIN CERTIFICATE REQUEST-----).",
        )
    return _b64decode(blocks[0][1], what="certificate request")


def _decode(data: bytes) -> bytes:
    """Return the DER of the one object in ``data`` (raw DER is returned as it is, never stripped)."""
    if data[:1] == b"\x30":
        return data
    data = data.strip()
    if b"-----BEGIN" in data:
        return _from_pem(data)
    if BASE64_TEXT.fullmatch(data):
        return _b64decode(data, what="submission")
    raise RequestRefused(
        Refusal.NOT_A_REQUEST,
        "This is not a certificate request. Submit a PKCS#10 CSR in PEM "
        "(-----BEGIN CERTIFICATE REQUEST-----) or DER form.",
    )


_DAMAGED = (
    "The certificate request is damaged or incomplete and cannot be read. "
    "Make it again with openssl req or keytool -certreq and submit the whole file."
)


_TOO_DEEP = (
    "This is not a certificate request: its structure is nested far deeper than any real request's. "
    "Make it again with openssl req or keytool -certreq and submit the whole file."
)


def _load_csr(der: bytes) -> x509.CertificateSigningRequest:
    refuse_deep_der(der, refusal=_TOO_DEEP)
    refuse_private_key_der(der, warning=PRIVATE_KEY_WARNING)
    leading = first_der_object(der, cut=_DAMAGED, unreadable=_DAMAGED)
    if len(leading) != len(der):
        # Refuse a leading private key, certificate or non-request for what it is; only a real request
        # followed by more data is "more than one".
        _load_csr(leading)
        raise RequestRefused(
            Refusal.MULTIPLE,
            "There is extra data after the certificate request; submit exactly one request.",
        )
    try:
        return x509.load_der_x509_csr(der)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError: a version other than v1
        pass
    try:
        x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        pass
    else:
        raise RequestRefused(
            Refusal.CERTIFICATE,
            "This is a certificate, not a certificate request. Submit the CSR made with: "
            "openssl req -new -key my.key -out my.csr.",
        )
    raise RequestRefused(
        Refusal.MALFORMED,
        "This is not a valid PKCS#10 certificate request. Make it again with openssl req or "
        "keytool -certreq and submit the whole file.",
    )


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


def _verify_self_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        valid = csr.is_signature_valid
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
    _verify_self_signature(csr)
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
    der = _decode(raw)
    if not der:
        raise RequestRefused(Refusal.EMPTY, "The PEM block is empty. Paste the whole CSR file.")
    return check_csr_der(der=der)
