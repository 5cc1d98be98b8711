"""OCSP responses (RFC 6960) for one CA, signed by the CA key itself.

The responder answers for certificates of one issuer: a request whose issuerNameHash/issuerKeyHash do not
match it, or are made with a hash `cryptography` does not know (MD5, ...), gets ``unauthorized`` (RFC 6960
2.3). Known serials are ``good`` or ``revoked`` (with time and
reason, 2.2); serials this CA never issued are ``unknown``. A nonce in the request (4.4.1) is echoed.
A request that cannot be read, including one whose extensions are damaged or repeated (RFC 5280 4.2: an
extension appears at most once) or that asks for a negative serial, gets ``malformedRequest``.
The response is signed by the CA (2.6: the CA that issued the certificate may sign), with the responder
identified by key hash and no extra certificates.
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

from .keys import CAPrivateKey, signature_hash_for


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


def _issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """issuerNameHash and issuerKeyHash of ``issuer`` (RFC 6960 4.1.1) with the request's hash."""
    name_der = issuer.subject.public_bytes()
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # issuerKeyHash is over the subjectPublicKey BIT STRING value, without tag, length and unused-bits octet.
    key_bits = asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]
    return _digest(algorithm, name_der), _digest(algorithm, key_bits)


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
    issuer_key: CAPrivateKey,
    lookup: Callable[[int], CertificateState | None],
    now: dt.datetime,
    validity: dt.timedelta,
) -> OcspAnswer:
    """Build the signed response to a DER OCSPRequest; malformed input gets ``malformedRequest``."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        serial = request.serial_number
        nonce = _nonce(request)
    except (ValueError, TypeError, NotImplementedError, x509.DuplicateExtension):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed")
    if serial < 0:  # no certificate has one (RFC 5280 4.1.2.2), and no response can name it
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed")
    try:
        algorithm = request.hash_algorithm
    except UnsupportedAlgorithm:  # a CertID hash `cryptography` does not know (MD5, ...): not answerable
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
    if _issuer_hashes(issuer, algorithm) != (request.issuer_name_hash, request.issuer_key_hash):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
    state = lookup(serial)
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
        issuer_name_hash=request.issuer_name_hash,
        issuer_key_hash=request.issuer_key_hash,
        serial_number=serial,
        algorithm=algorithm,
        cert_status=cert_status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=state.revoked_at if state is not None and label == "revoked" else None,
        revocation_reason=None if reason in (None, x509.ReasonFlags.unspecified) else reason,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
    if nonce is not None:
        builder = builder.add_extension(nonce, critical=False)
    response = builder.sign(issuer_key, signature_hash_for(key=issuer_key))
    return OcspAnswer(
        response.public_bytes(serialization.Encoding.DER), label, this_update, next_update, nonce is not None
    )
