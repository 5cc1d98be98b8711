"""ca.pki.est: EST's certs-only PKCS#7, base64 bodies and CSR attributes (no Django, no database)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from ca.pki import est
from tests.helpers import fixture_bytes


def csr_der() -> bytes:
    pem = fixture_bytes("openssl-ec-p256.csr.pem")
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def test_it_reads_base64_with_line_breaks_and_raw_der() -> None:
    der = csr_der()

    assert est.decode_body(base64.encodebytes(der)) == der
    assert est.decode_body(base64.b64encode(der) + b"\r\n") == der
    assert est.decode_body(der) == der


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"  \r\n ", "empty"),
        (b"%%%", "not base64"),
        (b"====", "not base64"),
        (b"A" * (est.MAX_BODY_BYTES + 1), "at most 64 KiB"),
    ],
)
def test_it_refuses_bodies_it_cannot_read_in_plain_words(body: bytes, words: str) -> None:
    with pytest.raises(est.BodyError, match=words):
        est.decode_body(body)


def test_certs_only_round_trips_in_base64_lines_without_carriage_returns() -> None:
    der = _self_signed_der()

    body = est.base64_body(est.certs_only([der]))

    assert b"\r" not in body  # coreutils' base64 -d refuses it
    assert all(len(line) <= 76 for line in body.split(b"\n"))
    (loaded,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
    assert loaded.public_bytes(serialization.Encoding.DER) == der


def test_certs_only_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="at least one"):
        est.certs_only([])


def test_csr_attributes_are_p256_with_sha256() -> None:
    parsed = core.Sequence.load(est.csr_attributes())
    assert parsed[0].native == "1.2.840.10045.4.3.2"
    key_type = core.Sequence.load(parsed[1].dump())
    assert key_type[0].native == "1.2.840.10045.2.1"
    assert core.SetOf.load(key_type[1].dump(), spec=core.ObjectIdentifier)[0].native == "1.2.840.10045.3.1.7"


def _self_signed_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "est test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)
