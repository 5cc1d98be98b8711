"""The OCSP core (ca.pki.ocsp): reading requests, matching a CertID to its issuer, answering.

No database: the responder picks the CA by the request's CertID (issuerNameHash and issuerKeyHash, RFC 6960
4.1.1) with any hash a client may use, and every answer carries nextUpdate.
"""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.pki.keys import CAPrivateKey
from ca.pki.ocsp import CertificateState, OcspAnswer, OcspQuestion, answer, read_request, respond
from ca.pki.signing import PrivateKeyBackend
from tests.pki.test_crl_builder import make_issuer

NOW = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.UTC)
VALIDITY = dt.timedelta(seconds=4)


@pytest.fixture(scope="module")
def issuer_key() -> CAPrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def issuer(issuer_key: CAPrivateKey) -> x509.Certificate:
    return make_issuer(issuer_key)


@pytest.fixture(scope="module")
def other_issuer() -> x509.Certificate:
    return make_issuer(ec.generate_private_key(ec.SECP256R1()))


def leaf(issuer: x509.Certificate, issuer_key: CAPrivateKey, *, serial: int = 0x1234) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "alice")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


def request_for(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    algorithm: hashes.HashAlgorithm | None = None,
    nonce: bytes | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate,
        issuer,
        algorithm or hashes.SHA1(),  # noqa: S303 (RFC 5019 CertIDs use SHA-1)
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "algorithm",
    [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],  # noqa: S303
    ids=lambda a: a.name,
)
def test_a_cert_id_with_any_common_hash_names_its_issuer_and_no_other(
    algorithm: hashes.HashAlgorithm,
    issuer: x509.Certificate,
    issuer_key: CAPrivateKey,
    other_issuer: x509.Certificate,
) -> None:
    question = read_request(request_der=request_for(leaf(issuer, issuer_key), issuer, algorithm=algorithm))
    assert isinstance(question, OcspQuestion)
    assert question.serial == 0x1234
    assert question.asks_about(issuer)
    assert not question.asks_about(other_issuer)


def nested(depth: int) -> bytes:
    """``depth`` SEQUENCEs, each holding the next, around a NULL: well-formed DER, absurdly deep."""
    inner = b"\x05\x00"
    for _ in range(depth):
        size = len(inner)
        length = bytes([size]) if size < 128 else b"\x82" + size.to_bytes(2, "big")
        inner = b"\x30" + length + inner
    return inner


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"\x30\x00",
        b"\x30\x80\x00\x00",
        b"not an OCSP request at all",
        b"\x30" * 2000,
        b"\x30\x82\xff\xff" + b"\x00" * 16,
        # ~950 nested SEQUENCEs (the shape that exhausted the stack of a recursive decoder elsewhere)
        nested(950),
    ],
    ids=[
        "empty",
        "zero",
        "empty-sequence",
        "indefinite-length",
        "text",
        "nested-tags",
        "long-length",
        "deep",
    ],
)
def test_bytes_that_are_not_a_request_get_malformed_request(garbage: bytes) -> None:
    result = read_request(request_der=garbage)
    assert isinstance(result, OcspAnswer)
    assert result.status == "malformed"
    loaded = ocsp.load_der_ocsp_response(result.der)
    assert loaded.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_request_with_two_cert_ids_gets_malformed_request(
    issuer: x509.Certificate, issuer_key: CAPrivateKey
) -> None:
    one = asn1_ocsp.OCSPRequest.load(request_for(leaf(issuer, issuer_key), issuer))
    entries = one["tbs_request"]["request_list"]
    two = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [entries[0], entries[0]]}}).dump()
    result = read_request(request_der=two)
    assert isinstance(result, OcspAnswer)
    assert result.status == "malformed"


def test_a_cert_id_hashed_with_md5_gets_unauthorized(
    issuer: x509.Certificate, issuer_key: CAPrivateKey
) -> None:
    request = asn1_ocsp.OCSPRequest.load(request_for(leaf(issuer, issuer_key), issuer))
    request["tbs_request"]["request_list"][0]["req_cert"]["hash_algorithm"] = {"algorithm": "md5"}
    result = read_request(request_der=request.dump(force=True))
    assert isinstance(result, OcspAnswer)
    assert result.status == "unauthorized"


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (None, ocsp.OCSPCertStatus.UNKNOWN),
        (CertificateState(), ocsp.OCSPCertStatus.GOOD),
        (
            CertificateState(
                revoked_at=NOW - dt.timedelta(seconds=5), reason=x509.ReasonFlags.key_compromise
            ),
            ocsp.OCSPCertStatus.REVOKED,
        ),
    ],
    ids=["unknown", "good", "revoked"],
)
def test_every_answer_carries_next_update_and_verifies_with_the_issuer_key(
    state: CertificateState | None,
    status: ocsp.OCSPCertStatus,
    issuer: x509.Certificate,
    issuer_key: CAPrivateKey,
) -> None:
    question = read_request(request_der=request_for(leaf(issuer, issuer_key), issuer, nonce=b"n" * 16))
    assert isinstance(question, OcspQuestion)
    result = answer(
        question=question,
        issuer=issuer,
        backend=PrivateKeyBackend(key=issuer_key),
        state=state,
        now=NOW,
        validity=VALIDITY,
    )
    response = ocsp.load_der_ocsp_response(result.der)
    assert response.certificate_status is status
    assert response.next_update_utc == NOW + VALIDITY
    assert response.this_update_utc == NOW
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public_key.verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm)
    )


def test_respond_for_one_issuer_refuses_a_cert_id_of_another(
    issuer: x509.Certificate, issuer_key: CAPrivateKey, other_issuer: x509.Certificate
) -> None:
    result = respond(
        request_der=request_for(leaf(issuer, issuer_key), issuer),
        issuer=other_issuer,
        backend=PrivateKeyBackend(key=issuer_key),
        lookup=lambda serial: CertificateState(),
        now=NOW,
        validity=VALIDITY,
    )
    assert result.status == "unauthorized"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_a_question_or_an_unsuccessful_answer(data: bytes) -> None:
    result = read_request(request_der=data)
    if isinstance(result, OcspAnswer):
        assert result.status in {"malformed", "unauthorized"}
        ocsp.load_der_ocsp_response(result.der)
    else:
        assert result.serial >= 0
