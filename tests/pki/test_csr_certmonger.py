"""certmonger's requests: a CN written as a PrintableString that holds ``_`` is read, nothing else is
relaxed (ca.pki.csr, the leniency in its docstring)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.pki.csr import check_csr_der, parse_csr
from ca.pki.errors import Refusal, RequestRefused
from tests.pki.certmonger import certmonger_csr

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_key(name: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((FIXTURES / f"{name}.key.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def refusal(data: bytes) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        parse_csr(data=data)
    return caught.value


def spki_sha256(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return hashlib.sha256(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()


@pytest.mark.parametrize("name", ["openssl-ec-p256", "openssl-rsa2048"])
def test_it_reads_certmongers_printable_string_cn_with_an_underscore(name: str) -> None:
    key = fixture_key(name)
    der = certmonger_csr(key)
    with pytest.raises(ValueError, match="PrintableString"):
        x509.load_der_x509_csr(der)  # the case itself: cryptography refuses to read this subject

    parsed = parse_csr(data=der)

    assert parsed.der == der  # stored as sent, hashed as sent
    assert parsed.sha256 == hashlib.sha256(der).hexdigest()
    assert parsed.key.spki_sha256 == spki_sha256(key)
    assert parsed.requested_subject == "CN=certmonger_device"  # shown to approvers, never used
    assert check_csr_der(der=der).sha256 == parsed.sha256  # the CA's re-check before signing reads it too


@pytest.mark.parametrize("form", ["pem", "base64"])
def test_it_reads_it_in_every_form_a_request_may_come_in(form: str) -> None:
    der = certmonger_csr(fixture_key("openssl-ec-p256"))
    text = base64.encodebytes(der)
    data = b"-----BEGIN CERTIFICATE REQUEST-----\n" + text + b"-----END CERTIFICATE REQUEST-----\n"

    assert parse_csr(data=data if form == "pem" else text).der == der


def _signature_flipped(der: bytes) -> bytes:
    return der[:-1] + bytes([der[-1] ^ 0x01])


def _name_changed_after_signing(der: bytes) -> bytes:
    return der.replace(b"certmonger_device", b"certmonger_devicf")


def _underscore_for_a_space(der: bytes) -> bytes:
    """The same bytes with the ``_`` a space: a valid PrintableString, no retagging, signature broken."""
    return der.replace(b"certmonger_device", b"certmonger device")


@pytest.mark.parametrize(
    "tamper",
    [_signature_flipped, _name_changed_after_signing, _underscore_for_a_space],
    ids=lambda f: f.__name__,
)
def test_its_signature_is_checked_over_the_bytes_as_sent(tamper: object) -> None:
    der = certmonger_csr(fixture_key("openssl-ec-p256"))
    assert callable(tamper)

    assert refusal(tamper(der)).code == Refusal.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("common_name", "why"),
    [
        (b"caf\xc3\xa9_device", "non-ASCII bytes"),
        (b"bad\x01_device", "a control character"),
        (b"bad\x7f_device", "DEL"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_printable_string_with_anything_but_visible_ascii_is_still_damaged(
    common_name: bytes, why: str
) -> None:
    refused = refusal(certmonger_csr(fixture_key("openssl-ec-p256"), common_name=common_name))

    assert refused.code == Refusal.MALFORMED, why


@pytest.mark.parametrize(
    ("name", "code"),
    [("openssl-rsa1024", Refusal.KEY_SIZE), ("openssl-ec-secp256k1", Refusal.EC_CURVE)],
)
def test_the_key_policy_still_refuses_its_key(name: str, code: Refusal) -> None:
    assert refusal(certmonger_csr(fixture_key(name))).code == code


def test_a_request_that_is_damaged_elsewhere_is_still_damaged() -> None:
    der = certmonger_csr(fixture_key("openssl-ec-p256"))
    cut = der[: len(der) // 2]

    assert refusal(cut).code in {Refusal.TRUNCATED, Refusal.MALFORMED}
