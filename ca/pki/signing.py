"""Signing to-be-signed bytes: the key-backend interface and the one path every CA signature takes.

`cryptography`'s certificate, CRL and OCSP builders sign only with private keys that `cryptography` holds.
A CA key in a PKCS#11 token (or behind a signer process) is not such a key, so the portal never hands the
CA key to a builder. Instead:

1. the builder signs with a *throwaway* key of the CA key's type (same algorithm identifier), which yields
   the exact to-be-signed bytes (RFC 5280 4.1.1.1 ``tbsCertificate``, 5.1.1.1 ``tbsCertList``; RFC 6960
   4.2.1 ``tbsResponseData``). The throwaway copy is what lint checks, before the CA key signs anything;
2. the key backend signs those bytes (:class:`KeyBackend`);
3. the final DER is assembled: the same TBS, the same ``signatureAlgorithm`` (RFC 5280 4.1.1.2: it must
   equal the ``signature`` field inside the TBS, which the throwaway key of the same type guarantees), and
   the backend's signature as the BIT STRING ``signatureValue`` (4.1.1.3);
4. the result is verified with the CA's public key before anyone stores it.

The encrypted-file key goes through the same path (:class:`PrivateKeyBackend`), so there is one way to sign.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from .errors import CAKeyError

CAPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
SignatureHash = hashes.SHA256 | hashes.SHA384


class Purpose(enum.StrEnum):
    """What the bytes to sign are: a signer that re-checks what it signs parses them accordingly."""

    CERTIFICATE = "certificate"  # RFC 5280 4.1 TBSCertificate
    CRL = "crl"  # RFC 5280 5.1 TBSCertList
    OCSP_RESPONSE = "ocsp-response"  # RFC 6960 4.2.1 ResponseData


class KeyBackend(Protocol):
    """What the core needs of a CA key, wherever it lives (encrypted file, PKCS#11 token, signer process).

    ``sign`` returns the signature as X.509 carries it: for RSA the PKCS#1 v1.5 signature (RFC 8017 8.2),
    for ECDSA the DER ``ECDSA-Sig-Value`` SEQUENCE of r and s (RFC 5480 / RFC 3279 2.2.3), over ``data``
    hashed with ``algorithm``. ``purpose`` says what ``data`` is (a backend that only holds a key ignores
    it; a signer process parses and re-checks it). It raises :class:`ca.pki.errors.CAKeyError` with a
    plain reason when the key cannot sign (token missing, wrong PIN, no sign permission).
    """

    def public_key(self) -> CAPublicKey: ...

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes: ...


#: A batch signature's result: the signature, or why the backend refused that item (words a person reads).
Signed = bytes | str


class BatchKeyBackend(KeyBackend, Protocol):
    """A backend that signs many to-be-signed values in one exchange, and may re-check and refuse each.

    ``sign_many`` returns, per item in order, the signature (as :meth:`KeyBackend.sign`) or the reason that
    item was refused (a string); it raises :class:`ca.pki.errors.CAKeyError` when it cannot sign at all.
    With ``lint`` the backend lints each certificate (pkilint) before its key signs it, and a lint refusal's
    reason is the text of :class:`ca.pki.lint.CertificateLintError`, as a local lint refusal's. A backend
    whose ``lints_before_signing`` is true honours ``lint``: the caller then does not lint the drafts itself.
    """

    lints_before_signing: bool

    def sign_many(
        self, *, items: Sequence[bytes], algorithm: SignatureHash, purpose: Purpose, lint: bool
    ) -> list[Signed]: ...


def lints_before_signing(backend: KeyBackend) -> bool:
    """Whether ``backend`` lints each certificate itself before its key signs it (the signer does)."""
    return bool(getattr(backend, "lints_before_signing", False)) and hasattr(backend, "sign_many")


class PrivateKeyBackend:
    """A key held by `cryptography` in this process (a decrypted key file)."""

    def __init__(self, *, key: CAPrivateKey) -> None:
        self._key = key

    def public_key(self) -> CAPublicKey:
        return self._key.public_key()

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        del purpose  # a key in this process signs whatever the core hands it
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), algorithm)
        return self._key.sign(data, ec.ECDSA(algorithm))


def signature_hash(*, public_key: CAPublicKey) -> SignatureHash:
    """SHA-384 for P-384 and RSA of 4096 bits or more, SHA-256 otherwise (RFC 5480 section 4)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.key_size >= 384:
        return hashes.SHA384()
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 4096:
        return hashes.SHA384()
    return hashes.SHA256()


def certified_public_key(*, backend: KeyBackend, certificate: x509.Certificate) -> CAPublicKey:
    """``certificate``'s public key, once ``backend``'s key is known to be that key (else
    :class:`CAKeyError`): a signature the backend makes then verifies with the certificate's key."""
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    certified = certificate.public_key()
    if not isinstance(certified, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) or (
        backend.public_key().public_bytes(der, spki) != certified.public_bytes(der, spki)
    ):
        raise CAKeyError(
            "The key that signs for this CA is not the key of its certificate; nothing was signed. The "
            "operator must check the CA's key configuration."
        )
    return certified


_throwaway: dict[str, CAPrivateKey] = {}
_throwaway_lock = threading.Lock()


def throwaway_key(*, like: CAPublicKey) -> CAPrivateKey:
    """A key of ``like``'s algorithm (same curve for ECDSA; RSA of any size, since only the signature's
    length differs and the signature is replaced), made once per process and never used for anything but
    producing TBS bytes and the copy that lint reads."""
    if isinstance(like, ec.EllipticCurvePublicKey):
        name = f"ec-{like.curve.name}"
    elif isinstance(like, rsa.RSAPublicKey):
        name = "rsa"
    else:
        raise CAKeyError("A CA key must be RSA or ECDSA.")
    with _throwaway_lock:
        key = _throwaway.get(name)
        if key is None:
            if isinstance(like, ec.EllipticCurvePublicKey):
                key = ec.generate_private_key(like.curve)
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _throwaway[name] = key
        return key


# --- DER: X.690 8.1 tag-length-value, definite lengths only -------------------------------------------


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _children(der: bytes) -> list[bytes]:
    """The encodings of the elements of the SEQUENCE (or explicit tag) that ``der`` is, in order."""
    _, start, end = _header(der, 0)
    if end != len(der):
        raise ValueError("trailing bytes after a DER value")
    children: list[bytes] = []
    position = start
    while position < end:
        _, _, child_end = _header(der, position)
        children.append(der[position:child_end])
        position = child_end
    return children


def _header(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of value) of the value at ``offset`` (single-octet tags only)."""
    tag = der[offset]
    first = der[offset + 1]
    if first < 0x80:
        return tag, offset + 2, offset + 2 + first
    count = first & 0x7F
    if count == 0 or count > 4:
        raise ValueError("not a DER length")
    size = int.from_bytes(der[offset + 2 : offset + 2 + count], "big")
    start = offset + 2 + count
    if start + size > len(der):
        raise ValueError("a DER value runs past its end")
    return tag, start, start + size


def _contents(der: bytes) -> bytes:
    _, start, end = _header(der, 0)
    return der[start:end]


def _signed_parts(signed: bytes) -> tuple[bytes, bytes, bytes]:
    """(tbs, signatureAlgorithm, what follows the signature) of ``signed``, a SEQUENCE { tbs,
    signatureAlgorithm, signature BIT STRING, [optional rest] }: the TBS as encoded, never re-encoded."""
    tbs, algorithm, _old, *rest = _children(signed)
    return tbs, algorithm, b"".join(rest)


def _assemble(*, tbs: bytes, algorithm: bytes, signature: bytes, rest: bytes = b"") -> bytes:
    """SEQUENCE { tbs, signatureAlgorithm, signature BIT STRING (no unused bits), rest }."""
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature) + rest)


# --- the one path --------------------------------------------------------------------------------------


def _check_hash(backend: KeyBackend) -> tuple[CAPublicKey, SignatureHash]:
    public_key = backend.public_key()
    return public_key, signature_hash(public_key=public_key)


def _verify(*, public_key: CAPublicKey, signature: bytes, data: bytes, algorithm: SignatureHash) -> None:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            public_key.verify(signature, data, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise CAKeyError(
            "The CA key's signature does not verify with the CA certificate's public key; nothing was "
            "issued. The key backend holds another key than the certificate names: the operator must check "
            "the CA's key configuration."
        ) from None


def draft_certificate(*, builder: x509.CertificateBuilder, like: CAPublicKey) -> x509.Certificate:
    """The certificate signed with a throwaway key of ``like``'s type: its TBS bytes are final, its
    signature is not (what lint reads before the CA key is used)."""
    return builder.sign(throwaway_key(like=like), signature_hash(public_key=like))


def finish_certificate(*, draft: x509.Certificate, backend: KeyBackend) -> x509.Certificate:
    """The draft's TBS signed by ``backend``, assembled and verified (RFC 5280 4.1)."""
    public_key, algorithm = _check_hash(backend)
    data, signature_algorithm, rest = _signed_parts(draft.public_bytes(serialization.Encoding.DER))
    signature = backend.sign(data=data, algorithm=algorithm, purpose=Purpose.CERTIFICATE)
    _verify(public_key=public_key, signature=signature, data=data, algorithm=algorithm)
    return x509.load_der_x509_certificate(
        _assemble(tbs=data, algorithm=signature_algorithm, signature=signature, rest=rest)
    )


def finish_certificates(
    *, drafts: Sequence[x509.Certificate], backend: KeyBackend, lint: bool = False
) -> list[x509.Certificate | str]:
    """:func:`finish_certificate` for a batch: per draft, the certificate signed by ``backend`` (assembled
    and verified) or the reason ``backend`` refused it. A backend with ``sign_many``
    (:class:`BatchKeyBackend`) gets the whole batch in one exchange (and ``lint``: see there); any other is
    asked one draft after the other, and ``lint`` is the caller's to have done. Raises
    :class:`CAKeyError` when the backend cannot sign at all or a signature does not verify."""
    public_key, algorithm = _check_hash(backend)
    parts = [_signed_parts(draft.public_bytes(serialization.Encoding.DER)) for draft in drafts]
    items = [data for data, _algorithm, _rest in parts]
    batch = getattr(backend, "sign_many", None)
    if batch is not None:
        signed: list[Signed] = batch(items=items, algorithm=algorithm, purpose=Purpose.CERTIFICATE, lint=lint)
        if len(signed) != len(items):
            raise CAKeyError(
                "The key backend answered a batch with another number of results; nothing was stored."
            )
    else:
        signed = [backend.sign(data=data, algorithm=algorithm, purpose=Purpose.CERTIFICATE) for data in items]
    results: list[x509.Certificate | str] = []
    for (data, signature_algorithm, rest), signature in zip(parts, signed, strict=True):
        if isinstance(signature, str):
            results.append(signature)
            continue
        _verify(public_key=public_key, signature=signature, data=data, algorithm=algorithm)
        der = _assemble(tbs=data, algorithm=signature_algorithm, signature=signature, rest=rest)
        results.append(x509.load_der_x509_certificate(der))
    return results


def sign_certificate(
    *,
    builder: x509.CertificateBuilder,
    backend: KeyBackend,
    check: Callable[[x509.Certificate], None] | None = None,
) -> x509.Certificate:
    """Build a certificate with a throwaway key, let ``check`` (lint) refuse it by raising before the CA
    key is used, then sign its TBS with ``backend``."""
    draft = draft_certificate(builder=builder, like=backend.public_key())
    if check is not None:
        check(draft)
    return finish_certificate(draft=draft, backend=backend)


def sign_crl_der(*, builder: x509.CertificateRevocationListBuilder, backend: KeyBackend) -> bytes:
    """The DER of a CRL built with a throwaway key, its ``tbsCertList`` signed by ``backend`` (RFC 5280
    5.1) and verified. DER, not a parsed CRL: re-encoding a parsed CRL of 100,000 entries costs half a
    second, so a caller that stores the CRL takes these bytes as they are."""
    public_key, algorithm = _check_hash(backend)
    draft = builder.sign(throwaway_key(like=public_key), algorithm)
    data, signature_algorithm, rest = _signed_parts(draft.public_bytes(serialization.Encoding.DER))
    signature = backend.sign(data=data, algorithm=algorithm, purpose=Purpose.CRL)
    _verify(public_key=public_key, signature=signature, data=data, algorithm=algorithm)
    return _assemble(tbs=data, algorithm=signature_algorithm, signature=signature, rest=rest)


def sign_crl(
    *, builder: x509.CertificateRevocationListBuilder, backend: KeyBackend
) -> x509.CertificateRevocationList:
    """:func:`sign_crl_der`, parsed."""
    return x509.load_der_x509_crl(sign_crl_der(builder=builder, backend=backend))


def _responder_id(*, responder: x509.Certificate, encoding: ocsp.OCSPResponderEncoding) -> bytes:
    """RFC 6960 4.2.1: ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash }, KeyHash being the
    SHA-1 of the responder's subjectPublicKey BIT STRING value (as RFC 5280 4.2.1.2 method 1 computes)."""
    if encoding is ocsp.OCSPResponderEncoding.HASH:
        digest = x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
        return _tlv(0xA2, _tlv(0x04, digest))
    return _tlv(0xA1, responder.subject.public_bytes())


_stand_ins: dict[tuple[bytes, str], x509.Certificate] = {}


def _stand_in_responder(*, responder: x509.Certificate, key: CAPrivateKey) -> x509.Certificate:
    """A certificate of the throwaway key (the OCSP builder insists that its responder certificate
    matches the key it signs with); only its place in the TBS is used, and that is replaced by the real
    responder's."""
    cache_key = (responder.subject.public_bytes(), str(id(key)))
    with _throwaway_lock:
        cached = _stand_ins.get(cache_key)
    if cached is not None:
        return cached
    certificate = (
        x509.CertificateBuilder()
        .subject_name(responder.subject)
        .issuer_name(responder.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(responder.not_valid_before_utc)
        .not_valid_after(responder.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    with _throwaway_lock:
        _stand_ins[cache_key] = certificate
    return certificate


def sign_ocsp_response(
    *,
    builder: ocsp.OCSPResponseBuilder,
    responder: x509.Certificate,
    encoding: ocsp.OCSPResponderEncoding,
    backend: KeyBackend,
) -> ocsp.OCSPResponse:
    """A successful OCSP response from ``builder`` (no responder ID set yet), answered as ``responder``
    (the certificate of ``backend``'s key), its ``tbsResponseData`` signed by ``backend``.

    RFC 6960 4.2.1: OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT SEQUENCE {
    responseType, response OCTET STRING (the DER of BasicOCSPResponse) } }; BasicOCSPResponse ::= SEQUENCE
    { tbsResponseData, signatureAlgorithm, signature BIT STRING, certs [0] EXPLICIT OPTIONAL }, and
    tbsResponseData ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, responderID, producedAt, responses,
    responseExtensions [1] EXPLICIT OPTIONAL }. The builder signs with a throwaway key and a stand-in
    responder certificate; the responder ID is then replaced by the real one before the CA key signs.
    """
    public_key, algorithm = _check_hash(backend)
    throwaway = throwaway_key(like=public_key)
    stand_in = _stand_in_responder(responder=responder, key=throwaway)
    draft = builder.responder_id(encoding, stand_in).sign(throwaway, algorithm)
    status, response_bytes = _children(draft.public_bytes(serialization.Encoding.DER))
    response_type, basic = _children(_contents(response_bytes))
    draft_tbs, signature_algorithm, rest = _signed_parts(_contents(basic))
    fields = _children(draft_tbs)
    where = 1 if fields[0][0] == 0xA0 else 0  # skip an explicit version
    fields[where] = _responder_id(responder=responder, encoding=encoding)
    data = _tlv(0x30, b"".join(fields))
    signature = backend.sign(data=data, algorithm=algorithm, purpose=Purpose.OCSP_RESPONSE)
    _verify(public_key=public_key, signature=signature, data=data, algorithm=algorithm)
    new_basic = _assemble(tbs=data, algorithm=signature_algorithm, signature=signature, rest=rest)
    outer = _tlv(0x30, status + _tlv(0xA0, _tlv(0x30, response_type + _tlv(0x04, new_basic))))
    return ocsp.load_der_ocsp_response(outer)
