"""Helpers for the SPKAC tests: keys and SPKACs made by the real `openssl` (genpkey, spkac)."""

from __future__ import annotations

import base64
import functools
import tempfile
from pathlib import Path

from asn1crypto import algos, keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.pki.spkac import PublicKeyAndChallenge, SignedPublicKeyAndChallenge
from tests.harness.openssl import openssl
from tests.harness.programs import need_program


def make_key(directory: Path, kind: str) -> Path:
    """A private key file made by `openssl genpkey`: "rsa2048", "rsa1024" or "ec-p256"."""
    path = directory / f"{kind}.key"
    if kind.startswith("rsa"):
        options = ["-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{kind[3:]}"]
    else:
        options = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    result = openssl("genpkey", *options, "-out", str(path))
    assert result.returncode == 0, result.stderr.decode()
    return path


def spkac(key: Path, challenge: str, *, digest: str | None = "sha256") -> str:
    """The line `openssl spkac -key KEY -challenge C [-digest D]` prints: ``SPKAC=<base64>``."""
    args = ["spkac", "-key", str(key), "-challenge", challenge]
    if digest is not None:
        args += ["-digest", digest]
    result = openssl(*args)
    assert result.returncode == 0, result.stderr.decode()
    line = result.stdout.decode().strip()
    assert line.startswith("SPKAC=")
    return line


@functools.cache
def _key_directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="enroll-spkac-keys-"))


@functools.cache
def _cached_key(kind: str) -> Path:
    return make_key(_key_directory(), kind)


def key_file(kind: str) -> Path:
    """A key made once per test process by openssl: "rsa2048", "rsa1024" or "ec-p256"."""
    need_program("openssl")  # skip (or fail in CI) before the cache remembers anything
    return _cached_key(kind)


def load_key(path: Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def build_spkac(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    challenge: str,
    *,
    algorithm: str = "sha256_rsa",
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> str:
    """An SPKAC built in Python (for shapes openssl will not make), as ``SPKAC=<base64>``."""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tbs = PublicKeyAndChallenge({"spki": keys.PublicKeyInfo.load(spki), "challenge": challenge})
    digest = hash_algorithm or hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs.dump(), padding.PKCS1v15(), digest)
    else:
        signature = key.sign(tbs.dump(), ec.ECDSA(digest))
    signed = SignedPublicKeyAndChallenge(
        {
            "public_key_and_challenge": tbs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": algorithm}),
            "signature": signature,
        }
    )
    return "SPKAC=" + base64.b64encode(signed.dump()).decode("ascii")
