"""Key and signature policy for end-entity keys.

Accepted:
- RSA with a modulus of exactly 2048, 3072 or 4096 bits and public exponent 65537 (F4), the sizes and
  exponent every TLS stack, smart card and key store handles.
- ECDSA on NIST P-256 or P-384 (the curves TLS 1.2/1.3 clients, nginx, Apache, browsers and WebCrypto
  all implement; RFC 5480 section 2.1.1.1 names them).

Refused: DSA, Ed25519/Ed448 (see README: browsers and OS key stores cannot use them for TLS client
authentication yet), other curves, RSA moduli with small prime factors and RSA moduli whose primes are
so close that Fermat's method factors them (the "Fermat" weakness found in some key generators, e.g.
CVE-2022-26320).

Signatures on requests must use SHA-256, SHA-384 or SHA-512 (RSA PKCS#1 v1.5, RSA-PSS or ECDSA); MD5 and
SHA-1 are broken for signatures (RFC 6151, RFC 9155).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .errors import Refusal, RequestRefused

ALLOWED_RSA_SIZES = (2048, 3072, 4096)
RSA_EXPONENT = 65537
ALLOWED_CURVES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384"}
ALLOWED_SIGNATURE_HASHES = ("sha256", "sha384", "sha512")

#: Trial division bound for the small-factor check. Every prime below it is tested at once with one gcd.
SMALL_FACTOR_BOUND = 1 << 16
#: Fermat steps tried. A modulus whose primes differ by less than about 2^(bits/4) falls within a few
#: steps; 100 steps is the check used by public key-quality tools and costs well under a millisecond.
FERMAT_ROUNDS = 100


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the portal shows and stores about an accepted public key."""

    algorithm: str  # "RSA" or "ECDSA"
    size: int  # modulus bits or curve bits
    description: str  # "RSA 2048" or "ECDSA P-256"
    spki_sha256: str  # lower-case hex SHA-256 of the DER SubjectPublicKeyInfo


@functools.cache
def _small_primes_product() -> int:
    """Product of all primes below :data:`SMALL_FACTOR_BOUND` (sieve of Eratosthenes)."""
    sieve = bytearray([1]) * SMALL_FACTOR_BOUND
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(SMALL_FACTOR_BOUND) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, SMALL_FACTOR_BOUND, i)))
    return math.prod(i for i in range(SMALL_FACTOR_BOUND) if sieve[i])


def _fermat_factorable(n: int, *, rounds: int = FERMAT_ROUNDS) -> bool:
    """True if n = a^2 - b^2 is found within ``rounds`` steps from ceil(sqrt(n)) (close primes)."""
    a = math.isqrt(n)
    if a * a < n:
        a += 1
    for _ in range(rounds):
        b2 = a * a - n
        b = math.isqrt(b2)
        if b * b == b2:
            return True
        a += 1
    return False


def spki_sha256(public_key: PublicKeyTypes) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7), as lower-case hex."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def check_public_key(*, public_key: PublicKeyTypes) -> KeyInfo:
    """Apply the key policy; return a description of the key or raise :class:`RequestRefused`."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        size = public_key.key_size
        if size not in ALLOWED_RSA_SIZES:
            raise RequestRefused(
                Refusal.KEY_SIZE,
                f"The RSA key has {size} bits; use 2048, 3072 or 4096 bits "
                "(for example: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072).",
            )
        if numbers.e != RSA_EXPONENT:
            raise RequestRefused(
                Refusal.RSA_EXPONENT,
                f"The RSA key uses public exponent {numbers.e}; only 65537 is accepted. "
                "Generate a new key with the default exponent.",
            )
        if math.gcd(numbers.n, _small_primes_product()) != 1:
            raise RequestRefused(
                Refusal.RSA_SMALL_FACTOR,
                "The RSA key is broken: its modulus has a small prime factor, so anyone can compute the "
                "private key. Generate a new key with openssl or your platform's key tool.",
            )
        if _fermat_factorable(numbers.n):
            raise RequestRefused(
                Refusal.RSA_CLOSE_PRIMES,
                "The RSA key is broken: its two primes are so close that the private key can be computed "
                "(Fermat factoring). Generate a new key with an up-to-date key generator.",
            )
        return KeyInfo("RSA", size, f"RSA {size}", spki_sha256(public_key))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = ALLOWED_CURVES.get(public_key.curve.name)
        if curve is None:
            raise RequestRefused(
                Refusal.EC_CURVE,
                f"The elliptic-curve key uses curve {public_key.curve.name}; only P-256 (prime256v1) and "
                "P-384 (secp384r1) are accepted. Generate a new key, for example: "
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256.",
            )
        return KeyInfo("ECDSA", public_key.curve.key_size, f"ECDSA {curve}", spki_sha256(public_key))
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise RequestRefused(
            Refusal.KEY_TYPE,
            "Ed25519/Ed448 keys are not accepted yet: browsers and operating-system key stores cannot use "
            "them for TLS client authentication. Use an ECDSA P-256 key instead.",
        )
    if isinstance(public_key, dsa.DSAPublicKey):
        raise RequestRefused(
            Refusal.KEY_TYPE,
            "DSA keys are not accepted (DSA is deprecated and unsupported in TLS 1.3). "
            "Use an ECDSA P-256 or RSA 3072 key instead.",
        )
    raise RequestRefused(
        Refusal.KEY_TYPE,
        f"Keys of type {type(public_key).__name__} are not accepted. Use an ECDSA P-256 or RSA 3072 key.",
    )


def check_signature_hash(*, algorithm: hashes.HashAlgorithm | None) -> None:
    """Refuse request signatures that do not use SHA-256, SHA-384 or SHA-512."""
    if algorithm is None:
        raise RequestRefused(
            Refusal.SIGNATURE_ALGORITHM,
            "The request's signature algorithm is not one the portal accepts (it uses no SHA-2 hash). "
            "Sign it with SHA-256 and an RSA or ECDSA key (for example: openssl req -new -sha256 ...).",
        )
    if algorithm.name not in ALLOWED_SIGNATURE_HASHES:
        why = "is no longer safe" if algorithm.name in ("md5", "sha1") else "is not accepted"
        raise RequestRefused(
            Refusal.SIGNATURE_ALGORITHM,
            f"The request is signed with {algorithm.name.upper()}, which {why}: only SHA-256, SHA-384 and "
            "SHA-512 are accepted. Sign it with SHA-256 (for example: openssl req -new -sha256 ...).",
        )
