"""Strict key encodings (ca.pki.keypolicy.check_key_encoding / check_reencoding), on CSRs and SPKACs.

Keys made by the real `openssl` where it can make the shape (explicit curve parameters, compressed points,
RSA-PSS keys); the rest built with asn1crypto and signed with the key, so only the encoding is wrong.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.pki.csr import parse_csr
from ca.pki.errors import Refusal, RequestRefused
from ca.pki.spkac import PublicKeyAndChallenge, SignedPublicKeyAndChallenge, parse_spkac
from tests.harness.openssl import openssl
from tests.harness.programs import need_program

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def openssl_csr(tmp_path: Path, *key_steps: list[str]) -> bytes:
    """Run each openssl step (``{key}`` is the key file), then `openssl req -new` from the key."""
    need_program("openssl")
    key = tmp_path / "key.pem"
    for step in key_steps:
        result = openssl(*[arg.replace("{key}", str(key)) for arg in step])
        assert result.returncode == 0, result.stderr.decode()
    result = openssl("req", "-new", "-key", str(key), "-subj", "/CN=alice", "-outform", "DER")
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def compressed_spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    return bytes(
        asn1_keys.PublicKeyInfo(
            {"algorithm": {"algorithm": "ec", "parameters": ("named", "secp256r1")}, "public_key": point}
        ).dump()
    )


def refusal(data: bytes) -> RequestRefused:
    with pytest.raises(RequestRefused) as refused:
        parse_csr(data=data)
    return refused.value


GENPKEY_P256 = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "{key}"]


def test_an_ec_key_with_explicit_curve_parameters_is_refused(tmp_path: Path) -> None:
    csr = openssl_csr(tmp_path, [*GENPKEY_P256[:-2], "-pkeyopt", "ec_param_enc:explicit", "-out", "{key}"])
    refused = refusal(csr)
    assert refused.code is Refusal.KEY_ENCODING
    assert "naming the curve" in refused.message


def test_an_ec_key_in_compressed_form_made_by_openssl_is_refused(tmp_path: Path) -> None:
    csr = openssl_csr(
        tmp_path, GENPKEY_P256, ["ec", "-in", "{key}", "-conv_form", "compressed", "-out", "{key}"]
    )
    refused = refusal(csr)
    assert refused.code is Refusal.KEY_ENCODING
    assert "compressed" in refused.message


def test_an_rsa_pss_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    csr = openssl_csr(
        tmp_path, ["genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "{key}"]
    )
    refused = refusal(csr)
    assert refused.code is Refusal.KEY_ENCODING
    assert "RSA-PSS" in refused.message


def test_the_same_key_in_uncompressed_form_is_accepted(tmp_path: Path) -> None:
    csr = openssl_csr(tmp_path, GENPKEY_P256)
    assert parse_csr(data=csr).key.description == "ECDSA P-256"


def test_an_rsa_key_without_null_parameters_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = spki(key)
    with_null = b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00"
    start = der.index(with_null)
    body = b"\x30\x0b" + with_null[2:-2] + der[start + len(with_null) :]  # rsaEncryption, parameters absent
    bare = b"\x30" + _length(len(body)) + body
    refused = refusal(signed_csr(key, bare))
    assert refused.code is Refusal.KEY_ENCODING
    assert "NULL" in refused.message


def test_a_key_encoded_with_a_non_minimal_length_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = spki(key)
    assert der[1] < 0x80
    padded = der[:1] + b"\x81" + der[1:]  # the same length in long form: BER, not DER (X.690 10.1)
    with pytest.raises(RequestRefused) as refused:
        parse_csr(data=signed_csr(key, padded))
    assert refused.value.code in {Refusal.KEY_ENCODING, Refusal.MALFORMED}


def signed_csr(key: PrivateKey, spki_der: bytes) -> bytes:
    """A CSR carrying the SubjectPublicKeyInfo ``spki_der`` exactly as given, validly signed by ``key``."""
    version = b"\x02\x01\x00"
    subject = bytes(asn1_x509.Name.build({"common_name": "alice"}).dump())
    body = version + subject + spki_der + b"\xa0\x00"  # no attributes
    tbs = b"\x30" + _length(len(body)) + body
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        algorithm = b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b\x05\x00"  # sha256WithRSA
    else:
        signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        algorithm = b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"  # ecdsa-with-SHA256
    bits = b"\x03" + _length(len(signature) + 1) + b"\x00" + signature
    outer = tbs + algorithm + bits
    return b"\x30" + _length(len(outer)) + outer


def _length(size: int) -> bytes:
    """A DER length: minimal form (X.690 10.1)."""
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def test_an_spkac_with_a_compressed_point_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    tbs = PublicKeyAndChallenge(
        {"spki": asn1_keys.PublicKeyInfo.load(compressed_spki(key)), "challenge": "c"}
    )
    signature = key.sign(tbs.dump(), ec.ECDSA(hashes.SHA256()))
    spkac = SignedPublicKeyAndChallenge(
        {
            "public_key_and_challenge": tbs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }
    ).dump()
    with pytest.raises(RequestRefused) as refused:
        parse_spkac(data=b"SPKAC=" + base64.b64encode(spkac))
    assert refused.value.code is Refusal.KEY_ENCODING


def test_a_csr_with_a_compressed_point_signed_by_its_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    refused = refusal(signed_csr(key, compressed_spki(key)))
    assert refused.code is Refusal.KEY_ENCODING
