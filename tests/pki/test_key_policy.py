"""Key and signature policy: ca.pki.keypolicy, called directly with keys made by `cryptography`."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable

import pytest
import sympy
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ca.pki import keypolicy
from ca.pki.errors import Refusal, RequestRefused
from ca.pki.keypolicy import check_public_key, check_signature_hash


@functools.cache
def rsa_public_key(bits: int) -> rsa.RSAPublicKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()


def refusal_for(public_key: PublicKeyTypes) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        check_public_key(public_key=public_key)
    return caught.value


def rsa_modulus_from_primes(p: int, q: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(e=65537, n=p * q).public_key()


def prime_of_1024_bits() -> int:
    """A random 1024-bit prime with its two top bits set (OpenSSL's RSA primes are made that way)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers().p


# --- accepted ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_it_accepts_rsa_of_the_allowed_sizes_with_exponent_65537(bits: int) -> None:
    key = rsa_public_key(bits)

    info = check_public_key(public_key=key)

    assert (info.algorithm, info.size, info.description) == ("RSA", bits, f"RSA {bits}")


@pytest.mark.parametrize(
    ("curve", "description", "size"),
    [(ec.SECP256R1(), "ECDSA P-256", 256), (ec.SECP384R1(), "ECDSA P-384", 384)],
    ids=["P-256", "P-384"],
)
def test_it_accepts_ecdsa_p256_and_p384(curve: ec.EllipticCurve, description: str, size: int) -> None:
    info = check_public_key(public_key=ec.generate_private_key(curve).public_key())

    assert (info.algorithm, info.size, info.description) == ("ECDSA", size, description)


def test_it_fingerprints_the_subject_public_key_info_with_sha256() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    assert check_public_key(public_key=key).spki_sha256 == hashlib.sha256(spki).hexdigest()


# --- refused -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1024, 2560])
def test_it_rejects_rsa_1024_and_other_sizes(bits: int) -> None:
    refused = refusal_for(rsa_public_key(bits))

    assert refused.code is Refusal.KEY_SIZE
    assert f"{bits} bits" in refused.message
    assert "2048, 3072 or 4096" in refused.message


@pytest.mark.parametrize("exponent", [3, 17, 65539])
def test_it_rejects_an_rsa_exponent_other_than_65537(exponent: int) -> None:
    modulus = rsa_public_key(2048).public_numbers().n
    refused = refusal_for(rsa.RSAPublicNumbers(e=exponent, n=modulus).public_key())

    assert refused.code is Refusal.RSA_EXPONENT
    assert f"exponent {exponent}" in refused.message
    assert "65537" in refused.message


REFUSED_KEYS = [
    pytest.param(
        lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
        Refusal.EC_CURVE,
        "secp521r1",
        id="P-521",
    ),
    pytest.param(
        lambda: ec.generate_private_key(ec.SECP224R1()).public_key(),
        Refusal.EC_CURVE,
        "secp224r1",
        id="P-224",
    ),
    pytest.param(
        lambda: ec.generate_private_key(ec.SECP256K1()).public_key(),
        Refusal.EC_CURVE,
        "secp256k1",
        id="secp256k1",
    ),
    pytest.param(
        lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
        Refusal.KEY_TYPE,
        "TLS client authentication",
        id="Ed25519",
    ),
    pytest.param(
        lambda: ed448.Ed448PrivateKey.generate().public_key(), Refusal.KEY_TYPE, "Ed25519/Ed448", id="Ed448"
    ),
    pytest.param(
        lambda: dsa.generate_private_key(key_size=2048).public_key(),
        Refusal.KEY_TYPE,
        "DSA is deprecated",
        id="DSA",
    ),
]


@pytest.mark.parametrize(("make_key", "code", "keyword"), REFUSED_KEYS)
def test_it_rejects_other_key_types_and_curves_with_their_reason(
    make_key: Callable[[], PublicKeyTypes], code: Refusal, keyword: str
) -> None:
    refused = refusal_for(make_key())

    assert refused.code is code
    assert keyword in refused.message
    assert "P-256" in refused.message  # says what to use instead


# --- broken RSA moduli -------------------------------------------------------------------------------


@pytest.mark.parametrize("small_prime", [3, 65521])
def test_it_rejects_an_rsa_modulus_with_a_small_prime_factor(small_prime: int) -> None:
    cofactor_bits = 2048 - small_prime.bit_length()
    cofactor = secrets.randbits(cofactor_bits) | (1 << (cofactor_bits - 1)) | (1 << (cofactor_bits - 2)) | 1
    key = rsa.RSAPublicNumbers(e=65537, n=small_prime * cofactor).public_key()
    assert key.key_size == 2048

    refused = refusal_for(key)

    assert refused.code is Refusal.RSA_SMALL_FACTOR
    assert "small prime factor" in refused.message


def test_the_small_prime_product_holds_every_prime_below_the_bound() -> None:
    product = keypolicy._small_primes_product()

    assert all(product % prime == 0 for prime in sympy.primerange(2, keypolicy.SMALL_FACTOR_BOUND))
    assert product % int(sympy.nextprime(keypolicy.SMALL_FACTOR_BOUND)) != 0
    assert product % 4 != 0  # each prime once


@pytest.mark.parametrize("gap_bits", [1, 256, 512])
def test_it_rejects_an_rsa_modulus_whose_primes_are_close(gap_bits: int) -> None:
    p = prime_of_1024_bits()
    q = int(sympy.nextprime(p + (1 << gap_bits)))

    refused = refusal_for(rsa_modulus_from_primes(p, q))

    assert refused.code is Refusal.RSA_CLOSE_PRIMES
    assert "Fermat" in refused.message


@pytest.mark.parametrize("gap_bits", [530, 1000])
def test_it_accepts_primes_far_enough_apart_for_fermat(gap_bits: int) -> None:
    p = prime_of_1024_bits()
    q = int(sympy.nextprime(p - (1 << gap_bits)))

    assert check_public_key(public_key=rsa_modulus_from_primes(p, q)).description == "RSA 2048"


def test_fermat_finds_the_primes_within_its_rounds() -> None:
    p = prime_of_1024_bits()
    q = int(sympy.nextprime(p + (1 << 400)))

    assert keypolicy._fermat_factorable(p * q, rounds=1)
    assert keypolicy._fermat_factorable(p * p, rounds=1)  # a perfect square is factored at once
    assert not keypolicy._fermat_factorable(rsa_public_key(2048).public_numbers().n)


# --- request signature hash --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()], ids=lambda a: a.name
)
def test_it_accepts_sha2_256_384_512_signatures(algorithm: hashes.HashAlgorithm) -> None:
    check_signature_hash(algorithm=algorithm)


@pytest.mark.parametrize(
    ("algorithm", "keyword"),
    [
        pytest.param(hashes.MD5(), "MD5, which is no longer safe", id="md5"),  # noqa: S303
        pytest.param(hashes.SHA1(), "SHA1, which is no longer safe", id="sha1"),  # noqa: S303
        pytest.param(hashes.SHA224(), "SHA224", id="sha224"),
        pytest.param(hashes.SHA3_256(), "SHA3-256", id="sha3-256"),
        pytest.param(None, "not one the portal accepts", id="no-hash"),
    ],
)
def test_it_rejects_other_signature_hashes(algorithm: hashes.HashAlgorithm | None, keyword: str) -> None:
    with pytest.raises(RequestRefused) as caught:
        check_signature_hash(algorithm=algorithm)

    assert caught.value.code is Refusal.SIGNATURE_ALGORITHM
    assert keyword in caught.value.message
    assert "SHA-256" in caught.value.message
