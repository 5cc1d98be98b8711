"""OCSP responses (RFC 6960) for one CA, signed by the CA key itself.

The responder answers for certificates of one issuer: a request whose issuerNameHash/issuerKeyHash do not
match it, or are made with a hash `cryptography` does not know (MD5, ...), gets ``unauthorized`` (RFC 6960
2.3). Known serials are ``good`` or ``revoked`` (with time and
reason, 2.2); serials this CA never issued are ``unknown``. A nonce in the request (4.4.1) is echoed.
A request that cannot be read, including one whose extensions are damaged or repeated (RFC 5280 4.2: an
extension appears at most once) or that asks for a negative serial, gets ``malformedRequest``.
The response is signed by the CA (2.6: the CA that issued the certificate may sign), with the responder
identified by key hash and no extra certificates; the CA key signs the tbsResponseData through its key
backend (:func:`ca.pki.signing.sign_ocsp_response`), wherever the key lives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from .der import TooDeep, check_depth
from .signing import KeyBackend, sign_ocsp_response


@dataclass(frozen=True, slots=True)
class CertificateState:
    """What the CA knows about a serial: revoked or not, and when and why."""

    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    der: bytes
    status: str  # "good", "revoked", "unknown", "malformed", "unauthorized"
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    has_nonce: bool = False


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


#: The CertID hashes a request may use that the responder can answer (RFC 6960 4.1.1 names SHA-1; RFC
#: 5019 2.1.1 lets clients use SHA-1 only, openssl and others also send SHA-256 and up). MD5 and the rest
#: are not answerable: such a request gets ``unauthorized``.
CERT_ID_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (
    hashes.SHA1,
    hashes.SHA224,
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
)


def issuer_hashes(*, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """issuerNameHash and issuerKeyHash of ``issuer`` (RFC 6960 4.1.1) with the request's hash.

    The name hash is over the DER of the issuer's subject; the key hash over the value of the
    subjectPublicKey BIT STRING, without its tag, length and unused-bits octet.
    """
    name_der = issuer.subject.public_bytes()
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_bits = asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]
    return _digest(algorithm, name_der), _digest(algorithm, key_bits)


@dataclass(frozen=True, slots=True)
class OcspQuestion:
    """What one OCSP request asks (RFC 6960 4.1.1): the CertID, and the nonce to echo (4.4.1)."""

    serial: int
    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    nonce: x509.OCSPNonce | None

    def asks_about(self, issuer: x509.Certificate) -> bool:
        """True if the CertID names ``issuer`` (both hashes match, with the request's algorithm)."""
        expected = issuer_hashes(issuer=issuer, algorithm=self.algorithm)
        return expected == (self.issuer_name_hash, self.issuer_key_hash)


def read_request(*, request_der: bytes) -> OcspQuestion | OcspAnswer:
    """The question in a DER OCSPRequest, or the unsuccessful answer it gets.

    ``malformedRequest`` (RFC 6960 2.3) for bytes that are not one request for one certificate (a
    request with several CertIDs is refused the same way: RFC 5019 2.1.1 lets clients send only one),
    damaged or repeated extensions, or a negative serial; ``unauthorized`` for a CertID hashed with an
    algorithm outside :data:`CERT_ID_HASHES`, which no responder here can match.
    """
    try:
        check_depth(request_der)
        request = ocsp.load_der_ocsp_request(request_der)
        serial = request.serial_number
        nonce = _nonce(request)
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
    except (ValueError, TypeError, NotImplementedError, x509.DuplicateExtension, TooDeep, RecursionError):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed")
    if serial < 0:  # no certificate has one (RFC 5280 4.1.2.2), and no response can name it
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed")
    try:
        algorithm = request.hash_algorithm
    except UnsupportedAlgorithm:  # a CertID hash `cryptography` does not know (MD5, ...)
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
    if not isinstance(algorithm, CERT_ID_HASHES):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
    return OcspQuestion(serial, algorithm, name_hash, key_hash, nonce)


def unauthorized() -> OcspAnswer:
    """The answer to a request about an issuer this responder does not serve (RFC 6960 2.3)."""
    return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")


def _nonce(request: ocsp.OCSPRequest) -> x509.OCSPNonce | None:
    """The request's nonce (RFC 6960 4.4.1), if any. Reading the extensions raises ValueError or
    DuplicateExtension for damaged or repeated ones."""
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        return None


def _unsuccessful(status: ocsp.OCSPResponseStatus, label: str) -> OcspAnswer:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return OcspAnswer(response.public_bytes(serialization.Encoding.DER), label)


def respond(
    *,
    request_der: bytes,
    issuer: x509.Certificate,
    backend: KeyBackend,
    lookup: Callable[[int], CertificateState | None],
    now: dt.datetime,
    validity: dt.timedelta,
) -> OcspAnswer:
    """Build the signed response to a DER OCSPRequest for one issuer; malformed input gets
    ``malformedRequest``, a CertID naming another issuer ``unauthorized``."""
    question = read_request(request_der=request_der)
    if isinstance(question, OcspAnswer):
        return question
    if not question.asks_about(issuer):
        return unauthorized()
    return answer(
        question=question,
        issuer=issuer,
        backend=backend,
        state=lookup(question.serial),
        now=now,
        validity=validity,
    )


def answer(
    *,
    question: OcspQuestion,
    issuer: x509.Certificate,
    backend: KeyBackend,
    state: CertificateState | None,
    now: dt.datetime,
    validity: dt.timedelta,
) -> OcspAnswer:
    """The signed response (RFC 6960 4.2) for ``question`` about a certificate of ``issuer``.

    ``state`` None means the issuer never issued this serial: ``unknown`` (2.2). Every response carries
    nextUpdate = thisUpdate + ``validity`` (4.2.2.1): a client without one may cache the answer as long
    as it likes (nginx keeps it an hour). The responder is the CA itself, named by key hash (2.6, 4.2.2.3).
    """
    this_update = now.replace(microsecond=0)
    next_update = this_update + validity
    if state is None:
        cert_status, label = ocsp.OCSPCertStatus.UNKNOWN, "unknown"
    elif state.revoked_at is not None:
        cert_status, label = ocsp.OCSPCertStatus.REVOKED, "revoked"
    else:
        cert_status, label = ocsp.OCSPCertStatus.GOOD, "good"
    reason = state.reason if state is not None and state.revoked_at is not None else None
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=question.issuer_name_hash,
        issuer_key_hash=question.issuer_key_hash,
        serial_number=question.serial,
        algorithm=question.algorithm,
        cert_status=cert_status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=state.revoked_at if state is not None and label == "revoked" else None,
        revocation_reason=None if reason in (None, x509.ReasonFlags.unspecified) else reason,
    )
    if question.nonce is not None:
        builder = builder.add_extension(question.nonce, critical=False)
    response = sign_ocsp_response(
        builder=builder, responder=issuer, encoding=ocsp.OCSPResponderEncoding.HASH, backend=backend
    )
    return OcspAnswer(
        response.public_bytes(serialization.Encoding.DER),
        label,
        this_update,
        next_update,
        question.nonce is not None,
    )
