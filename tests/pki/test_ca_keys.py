"""CA private keys: ca.pki.keys (generation, encrypted PKCS#8 files, loading)."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca.pki.errors import CAKeyError
from ca.pki.keys import (
    MIN_PASSPHRASE_LENGTH,
    CAKeyType,
    CAPrivateKey,
    check_key_matches,
    encrypt_ca_key,
    generate_ca_key,
    load_ca_key,
    load_private_key_pem,
    save_ca_key,
    signature_hash_for,
)

PASSPHRASE = "correct horse battery staple"


@functools.cache
def ca_key(key_type: CAKeyType) -> CAPrivateKey:
    """One key per type for the whole module (RSA 4096 takes a while to generate)."""
    return generate_ca_key(key_type=key_type)


@functools.cache
def certificate_for(key: CAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Key Test CA")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def private_der(key: CAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def same_key(a: CAPrivateKey, b: CAPrivateKey) -> bool:
    return private_der(a) == private_der(b)


@pytest.fixture
def key() -> CAPrivateKey:
    return ca_key(CAKeyType.EC_P256)


@pytest.fixture
def key_file(tmp_path: Path, key: CAPrivateKey) -> Path:
    path = tmp_path / "ca" / "test-root.key.pem"
    save_ca_key(key=key, path=path, passphrase=PASSPHRASE)
    return path


# --- generation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "expected_class", "size"),
    [
        (CAKeyType.EC_P256, ec.EllipticCurvePrivateKey, 256),
        (CAKeyType.EC_P384, ec.EllipticCurvePrivateKey, 384),
        (CAKeyType.RSA_3072, rsa.RSAPrivateKey, 3072),
        (CAKeyType.RSA_4096, rsa.RSAPrivateKey, 4096),
    ],
    ids=lambda value: str(value) if isinstance(value, CAKeyType) else None,
)
def test_it_generates_each_ca_key_type(
    key_type: CAKeyType, expected_class: type[CAPrivateKey], size: int
) -> None:
    generated = ca_key(key_type)

    assert isinstance(generated, expected_class)
    assert generated.key_size == size


def test_ec_ca_keys_are_on_the_nist_curves() -> None:
    p256, p384 = ca_key(CAKeyType.EC_P256), ca_key(CAKeyType.EC_P384)

    assert isinstance(p256, ec.EllipticCurvePrivateKey)
    assert isinstance(p384, ec.EllipticCurvePrivateKey)
    assert (p256.curve.name, p384.curve.name) == ("secp256r1", "secp384r1")


def test_rsa_ca_keys_use_exponent_65537() -> None:
    generated = ca_key(CAKeyType.RSA_3072)

    assert isinstance(generated, rsa.RSAPrivateKey)
    assert generated.public_key().public_numbers().e == 65537


def test_the_key_types_are_named_as_the_init_ca_command_takes_them() -> None:
    assert [str(key_type) for key_type in CAKeyType] == ["ec-p256", "ec-p384", "rsa-3072", "rsa-4096"]


@pytest.mark.parametrize(
    ("key_type", "hash_name"),
    [
        (CAKeyType.EC_P256, "sha256"),
        (CAKeyType.EC_P384, "sha384"),
        (CAKeyType.RSA_3072, "sha256"),
        (CAKeyType.RSA_4096, "sha384"),
    ],
    ids=lambda value: str(value) if isinstance(value, CAKeyType) else None,
)
def test_it_signs_with_a_hash_that_matches_the_key_strength(key_type: CAKeyType, hash_name: str) -> None:
    assert signature_hash_for(key=ca_key(key_type)).name == hash_name


# --- saving --------------------------------------------------------------------------------------------


def test_it_saves_the_key_readable_by_its_owner_only(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700


def test_it_saves_the_key_as_encrypted_pkcs8(key_file: Path, key: CAPrivateKey) -> None:
    pem = key_file.read_bytes()

    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert b"-----BEGIN PRIVATE KEY-----" not in pem
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    loaded = serialization.load_pem_private_key(pem, password=PASSPHRASE.encode())
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert same_key(loaded, key)


def test_it_encrypts_with_pbes2_pbkdf2_sha256_and_aes256(key: CAPrivateKey) -> None:
    pem = encrypt_ca_key(key=key, passphrase=PASSPHRASE)
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))

    algorithm = asn1_keys.EncryptedPrivateKeyInfo.load(der)["encryption_algorithm"]

    assert algorithm["algorithm"].native == "pbes2"
    assert algorithm["parameters"]["key_derivation_func"]["algorithm"].native == "pbkdf2"
    assert algorithm["parameters"]["key_derivation_func"]["parameters"]["prf"]["algorithm"].native == "sha256"
    assert algorithm["parameters"]["encryption_scheme"]["algorithm"].native == "aes256_cbc"


def test_it_never_overwrites_a_key_file(key_file: Path) -> None:
    before = key_file.read_bytes()

    with pytest.raises(CAKeyError, match="never overwritten"):
        save_ca_key(key=ca_key(CAKeyType.EC_P384), path=key_file, passphrase=PASSPHRASE)

    assert key_file.read_bytes() == before


def test_it_never_overwrites_any_existing_file(tmp_path: Path, key: CAPrivateKey) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("do not touch")

    with pytest.raises(CAKeyError, match="exists already"):
        save_ca_key(key=key, path=path, passphrase=PASSPHRASE)

    assert path.read_text() == "do not touch"


@pytest.mark.parametrize(
    "passphrase", ["", "short", "x" * (MIN_PASSPHRASE_LENGTH - 1)], ids=["empty", "5", "11"]
)
def test_it_refuses_a_short_passphrase(tmp_path: Path, key: CAPrivateKey, passphrase: str) -> None:
    path = tmp_path / "ca.key.pem"

    with pytest.raises(CAKeyError) as caught:
        save_ca_key(key=key, path=path, passphrase=passphrase)

    assert f"at least {MIN_PASSPHRASE_LENGTH} characters" in str(caught.value)
    assert "ENROLL_CA_PASSPHRASE" in str(caught.value)
    assert not path.exists()


def test_it_accepts_a_passphrase_of_exactly_the_minimum_length(tmp_path: Path, key: CAPrivateKey) -> None:
    passphrase = "p" * MIN_PASSPHRASE_LENGTH
    path = tmp_path / "ca.key.pem"

    save_ca_key(key=key, path=path, passphrase=passphrase)

    assert same_key(load_ca_key(path=path, passphrase=passphrase, certificate=certificate_for(key)), key)


# --- loading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(CAKeyType), ids=str)
def test_it_loads_a_saved_key_of_each_type(tmp_path: Path, key_type: CAKeyType) -> None:
    original = ca_key(key_type)
    path = tmp_path / f"{key_type}.key.pem"
    save_ca_key(key=original, path=path, passphrase=PASSPHRASE)

    loaded = load_ca_key(path=path, passphrase=PASSPHRASE, certificate=certificate_for(original))

    assert same_key(loaded, original)


def test_a_wrong_passphrase_gives_a_plain_message(key_file: Path, key: CAPrivateKey) -> None:
    with pytest.raises(CAKeyError) as caught:
        load_ca_key(path=key_file, passphrase="not the right passphrase", certificate=certificate_for(key))

    message = str(caught.value)
    assert "passphrase is wrong" in message
    assert "not the right passphrase" not in message
    assert PASSPHRASE not in message
    assert "\n" not in message
    assert "error:" not in message.lower()  # no OpenSSL error stack
    assert caught.value.__cause__ is None


def test_a_key_that_does_not_match_the_certificate_is_refused(key_file: Path) -> None:
    other_certificate = certificate_for(ca_key(CAKeyType.EC_P384))

    with pytest.raises(CAKeyError, match="does not belong to the CA certificate"):
        load_ca_key(path=key_file, passphrase=PASSPHRASE, certificate=other_certificate)


def test_check_key_matches_accepts_the_right_key_and_refuses_another() -> None:
    rsa_key = ca_key(CAKeyType.RSA_3072)

    check_key_matches(key=rsa_key, certificate=certificate_for(rsa_key))
    with pytest.raises(CAKeyError, match="does not belong"):
        check_key_matches(key=rsa_key, certificate=certificate_for(ca_key(CAKeyType.EC_P256)))


def test_a_missing_key_file_is_refused_with_its_path(tmp_path: Path, key: CAPrivateKey) -> None:
    path = tmp_path / "nowhere" / "ca.key.pem"

    with pytest.raises(CAKeyError) as caught:
        load_ca_key(path=path, passphrase=PASSPHRASE, certificate=certificate_for(key))

    assert str(path) in str(caught.value)
    assert "cannot be read" in str(caught.value)


def test_loading_without_a_passphrase_is_refused(key_file: Path, key: CAPrivateKey) -> None:
    with pytest.raises(CAKeyError, match="No CA passphrase is configured"):
        load_ca_key(path=key_file, passphrase="", certificate=certificate_for(key))


def test_an_unencrypted_key_file_is_refused_as_not_encrypted(tmp_path: Path, key: CAPrivateKey) -> None:
    path = tmp_path / "plain.key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    with pytest.raises(CAKeyError) as caught:
        load_ca_key(path=path, passphrase=PASSPHRASE, certificate=certificate_for(key))

    assert "not encrypted" in str(caught.value)
    assert "no passphrase was given" not in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda pem: pem[: len(pem) // 2], id="cut-in-half"),
        pytest.param(lambda pem: pem.replace(b"\n", b"\n!", 3), id="garbled"),
        pytest.param(lambda pem: b"", id="empty"),
    ],
)
def test_a_damaged_key_file_is_refused(
    key_file: Path, key: CAPrivateKey, damage: Callable[[bytes], bytes]
) -> None:
    key_file.write_bytes(damage(key_file.read_bytes()))

    with pytest.raises(CAKeyError, match="could not be read"):
        load_ca_key(path=key_file, passphrase=PASSPHRASE, certificate=certificate_for(key))


def test_an_encrypted_key_without_a_passphrase_says_so(key: CAPrivateKey) -> None:
    pem = encrypt_ca_key(key=key, passphrase=PASSPHRASE)

    with pytest.raises(CAKeyError, match="encrypted but no passphrase was given"):
        load_private_key_pem(pem=pem, passphrase=None)


@pytest.mark.parametrize(
    "encoding", [serialization.Encoding.PEM, serialization.Encoding.DER], ids=["pem", "der"]
)
def test_it_reads_an_unencrypted_key_to_import(key: CAPrivateKey, encoding: serialization.Encoding) -> None:
    data = key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    assert same_key(load_private_key_pem(pem=data, passphrase=None), key)


def test_it_refuses_a_key_type_a_ca_cannot_have() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )

    with pytest.raises(CAKeyError, match="must be RSA or ECDSA"):
        load_private_key_pem(pem=pem, passphrase=PASSPHRASE)
