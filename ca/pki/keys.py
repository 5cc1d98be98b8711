"""CA private keys: generation, encrypted storage, loading.

CA keys are stored as PKCS#8 (RFC 5958) PEM files encrypted with a passphrase
(``BestAvailableEncryption``: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, PKCS#5 v2.1 / RFC 8018).
PBKDF2 runs only 2048 rounds there (OpenSSL's default, not configurable for PKCS#8 in `cryptography`),
so the passphrase itself must carry the strength: at least 12 characters are enforced, a long random
value is expected (see docs/OPERATIONS.md, "CA keys"). This module is the only
place that reads them. Files are created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from .errors import CAKeyError
from .signing import signature_hash

MIN_PASSPHRASE_LENGTH = 12

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CAKeyType(enum.StrEnum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


def generate_ca_key(*, key_type: CAKeyType) -> CAPrivateKey:
    """A new CA key of one of the supported types."""
    match key_type:
        case CAKeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case CAKeyType.EC_P384:
            return ec.generate_private_key(ec.SECP384R1())
        case CAKeyType.RSA_3072:
            return rsa.generate_private_key(public_exponent=65537, key_size=3072)
        case CAKeyType.RSA_4096:
            return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise ValueError(f"unknown CA key type {key_type!r}")


def signature_hash_for(*, key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384:
    """The hash to sign with: SHA-384 for P-384 and RSA 4096, SHA-256 otherwise (RFC 5480 section 4).

    For callers that hold the private key; code that has only a key backend asks
    :func:`ca.pki.signing.signature_hash` with the public key (the one rule, kept there).
    """
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return hashes.SHA256()
    return signature_hash(public_key=key.public_key())


def _check_passphrase(passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise CAKeyError(
            f"The CA passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long; "
            "set ENROLL_CA_PASSPHRASE (or ENROLL_CA_PASSPHRASE_FILE) to a long random value."
        )
    return passphrase.encode("utf-8")


def encrypt_ca_key(*, key: CertificateIssuerPrivateKeyTypes, passphrase: str) -> bytes:
    """The key as encrypted PKCS#8 PEM (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC)."""
    encryption = serialization.BestAvailableEncryption(_check_passphrase(passphrase))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def save_ca_key(*, key: CertificateIssuerPrivateKeyTypes, path: Path, passphrase: str) -> None:
    """Write the key encrypted to a new file with mode 0600; refuse to overwrite an existing file."""
    pem = encrypt_ca_key(key=key, passphrase=passphrase)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CAKeyError(f"{path} exists already; a CA key file is never overwritten.") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def load_private_key_pem(*, pem: bytes, passphrase: str | None) -> CAPrivateKey:
    """Read an (optionally encrypted) PEM or DER private key of a supported CA type."""
    password = passphrase.encode("utf-8") if passphrase else None
    loaders = (serialization.load_pem_private_key, serialization.load_der_private_key)
    last_error: Exception | None = None
    for loader in loaders:
        try:
            key = loader(pem, password=password)
        except TypeError:
            # `cryptography` raises TypeError both for a missing and for an unneeded password.
            if password is None:
                raise CAKeyError(
                    "The CA key file is encrypted but no passphrase was given; set ENROLL_CA_PASSPHRASE."
                ) from None
            raise CAKeyError(
                "The CA key file is not encrypted, but CA keys must be stored encrypted (PKCS#8 with a "
                "passphrase). Import it with import_ca, which stores it encrypted."
            ) from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            last_error = exc
            continue
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise CAKeyError("A CA key must be RSA or ECDSA.")
        return key
    raise CAKeyError(
        "The CA key could not be read: the passphrase is wrong or the file is damaged "
        f"({type(last_error).__name__})."
    )


def load_ca_key(*, path: Path, passphrase: str, certificate: x509.Certificate) -> CAPrivateKey:
    """Load and decrypt a CA key file and check that it belongs to ``certificate``."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise CAKeyError(f"The CA key file {path} cannot be read: {exc.strerror}.") from None
    if not passphrase:
        raise CAKeyError(
            "No CA passphrase is configured; set ENROLL_CA_PASSPHRASE or ENROLL_CA_PASSPHRASE_FILE."
        )
    key = load_private_key_pem(pem=pem, passphrase=passphrase)
    check_key_matches(key=key, certificate=certificate)
    return key


def check_key_matches(*, key: CAPrivateKey, certificate: x509.Certificate) -> None:
    """Refuse a key whose public half is not the certificate's public key."""
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(der, spki):
        raise CAKeyError("The CA key does not belong to the CA certificate.")
