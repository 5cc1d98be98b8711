"""ROCA (CVE-2017-15361): RSA keys made by Infineon's RSALib are refused, at submission and at issuance.

The fixture ``crafted-rsa2048-roca`` has primes built as RSALib builds them (tests/fixtures/make_fixtures.py):
p = k * M + (65537^a mod M), M the product of the first 126 primes.
"""

from __future__ import annotations

import base64
import functools
import itertools
import math
import secrets
import time

import pytest
import sympy
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth.models import User

from ca.models import Certificate, CertificateAuthority
from ca.pki import keypolicy
from ca.pki.csr import parse_csr
from ca.pki.errors import Refusal, RequestRefused
from ca.pki.keypolicy import check_public_key, has_roca_fingerprint
from ca.pki.spkac import parse_spkac
from enroll import challenges, flows
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus
from tests.conftest import FIXTURES, fixture_bytes, make_csr
from tests.spkac_tools import build_spkac, load_key, spkac

ROCA_CSR = "crafted-rsa2048-roca.csr.pem"
ROCA_KEY = FIXTURES / "crafted-rsa2048-roca.key.pem"
CHALLENGE = "4f1c2a9e0b7d6c5a4f1c2a9e0b7d6c5a4f1c2a9e"
SESSION = "session-token-of-alices-browser"

GOOD_RSA_CSRS = [
    "openssl-rsa2048.csr.pem",
    "openssl-rsa2048.csr.der",
    "openssl-rsa2048-pss.csr.pem",
    "openssl-rsa3072.csr.pem",
    "openssl-rsa4096.csr.pem",
    "keytool-rsa2048.csr.pem",
]


def roca_key() -> rsa.RSAPrivateKey:
    key = load_key(ROCA_KEY)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def good_spkac(challenge: str) -> str:
    return build_spkac(ec.generate_private_key(ec.SECP256R1()), challenge, algorithm="sha256_ecdsa")


def csr_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def refusal_of(call: object) -> RequestRefused:
    assert callable(call)
    with pytest.raises(RequestRefused) as refused:
        call()
    return refused.value


def assert_roca_refusal(refused: RequestRefused) -> None:
    assert refused.code == Refusal.RSA_ROCA
    assert "vulnerable chip or library" in refused.message
    assert "new key with up-to-date software" in refused.message


@functools.cache
def powers_of_65537(r: int) -> frozenset[int]:
    return frozenset(pow(65537, i, r) for i in range(r))


@functools.cache
def primorial(count: int) -> int:
    return math.prod(int(sympy.prime(i)) for i in range(1, count + 1))


def rsalib_shaped(bits: int, primes: int) -> int:
    """k * M + (65537^a mod M) of ``bits`` bits, M the product of the first ``primes`` primes (not
    necessarily prime: the fingerprint looks only at residues modulo small primes)."""
    m = primorial(primes)
    k = secrets.randbits(bits - m.bit_length()) | 1 << (bits - m.bit_length() - 1)
    return k * m + pow(65537, secrets.randbelow(2**128), m)


# --- the fingerprint ---------------------------------------------------------------------------------


def test_the_fixture_key_has_rsalib_primes_and_is_otherwise_a_sound_rsa_2048_key() -> None:
    numbers = roca_key().private_numbers()

    assert numbers.public_numbers.n.bit_length() == 2048
    for prime in (numbers.p, numbers.q):
        assert sympy.isprime(prime)
        for r in sympy.primerange(3, int(sympy.prime(126)) + 1):  # every odd prime of M = 2 * 3 * ... * 701
            assert prime % r in powers_of_65537(int(r))


@pytest.mark.parametrize(
    ("bits", "primes"),
    [(512, 39), (1024, 71), (1536, 126), (2048, 225)],  # RSALib's primorials (Nemec et al., table 1)
    ids=["rsa1024", "rsa2048", "rsa3072", "rsa4096"],
)
def test_it_flags_every_modulus_of_rsalib_primes_at_every_key_size(bits: int, primes: int) -> None:
    for _ in range(20):
        assert has_roca_fingerprint(rsalib_shaped(bits, primes) * rsalib_shaped(bits, primes))


def test_a_random_modulus_matches_the_fingerprint_with_probability_below_two_to_the_minus_27() -> None:
    probability = math.prod(bin(mask).count("1") / (prime - 1) for prime, mask in keypolicy._roca_residues())

    assert probability < 2**-27


@functools.cache
def fresh_rsa_primes() -> tuple[int, ...]:
    """24 primes of 1024 bits from 12 fresh RSA 2048 keys made by `cryptography` (OpenSSL): their pairs
    give 276 moduli for the cost of 12 key generations."""
    primes: list[int] = []
    for _ in range(12):
        numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
        primes += [numbers.p, numbers.q]
    return tuple(primes)


def test_no_modulus_of_fresh_openssl_primes_is_flagged() -> None:
    moduli = [p * q for p, q in itertools.combinations(fresh_rsa_primes(), 2)]  # 276 RSA 2048 moduli

    flagged = [n for n in moduli if has_roca_fingerprint(n)]

    assert len(moduli) == 276
    assert flagged == []


@pytest.mark.parametrize("name", GOOD_RSA_CSRS)
def test_the_good_rsa_fixtures_are_not_flagged_and_still_accepted(name: str) -> None:
    parsed = parse_csr(data=fixture_bytes(name))

    key = parsed.csr.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert not has_roca_fingerprint(key.public_numbers().n)
    assert parsed.key.algorithm == "RSA"


def test_the_check_takes_microseconds_even_for_a_flagged_rsa_4096_modulus() -> None:
    flagged = rsalib_shaped(2048, 225) * rsalib_shaped(2048, 225)
    assert has_roca_fingerprint(flagged)

    started = time.perf_counter()
    for _ in range(1000):
        has_roca_fingerprint(flagged)
    per_call = (time.perf_counter() - started) / 1000

    assert per_call < 0.001  # about 30 us on one core; a millisecond leaves room for a busy CI machine


# --- refused everywhere a key comes in ---------------------------------------------------------------


def test_the_key_policy_refuses_the_roca_key() -> None:
    assert_roca_refusal(refusal_of(lambda: check_public_key(public_key=roca_key().public_key())))


@pytest.mark.parametrize("encoding", ["pem", "der", "base64"])
def test_a_roca_csr_is_refused_at_parsing_in_every_encoding(encoding: str) -> None:
    pem = fixture_bytes(ROCA_CSR)
    data = {"pem": pem, "der": csr_der(pem), "base64": base64.b64encode(csr_der(pem))}[encoding]

    assert_roca_refusal(refusal_of(lambda: parse_csr(data=data)))


@pytest.mark.django_db
def test_a_roca_csr_submission_is_refused_and_nothing_is_stored(alice: User) -> None:
    refused = refusal_of(lambda: flows.submit_csr(owner=alice, data=fixture_bytes(ROCA_CSR)))

    assert_roca_refusal(refused)
    assert not EnrollmentRequest.objects.exists()


def test_a_roca_spkac_is_refused() -> None:
    assert_roca_refusal(refusal_of(lambda: parse_spkac(data=build_spkac(roca_key(), CHALLENGE))))


@pytest.mark.real_client
def test_a_roca_spkac_made_by_openssl_is_refused() -> None:
    line = spkac(ROCA_KEY, CHALLENGE)

    assert_roca_refusal(refusal_of(lambda: parse_spkac(data=line)))


@pytest.mark.django_db
def test_a_roca_spkac_submission_is_refused_and_its_challenge_stays_usable(alice: User) -> None:
    challenge = challenges.issue(owner=alice, binding=SESSION).value
    line = build_spkac(roca_key(), challenge)

    refused = refusal_of(lambda: flows.submit_spkac(owner=alice, data=line, session_binding=SESSION))

    assert_roca_refusal(refused)
    assert not EnrollmentRequest.objects.exists()
    good = flows.submit_spkac(owner=alice, data=good_spkac(challenge), session_binding=SESSION)
    assert good.status == RequestStatus.SUBMITTED


@pytest.mark.django_db
def test_the_ca_refuses_a_stored_roca_csr_at_issuance(ca: CertificateAuthority, alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    EnrollmentRequest.objects.filter(pk=request.pk).update(request_der=csr_der(fixture_bytes(ROCA_CSR)))

    result = flows.approve(request_id=request.pk)

    assert result.status == RequestStatus.FAILED
    assert "vulnerable chip or library" in result.reason
    assert not Certificate.objects.exists()


@pytest.mark.django_db
def test_the_ca_refuses_a_stored_roca_spkac_at_issuance(ca: CertificateAuthority, alice: User) -> None:
    challenge = challenges.issue(owner=alice, binding=SESSION).value
    request = flows.submit_spkac(owner=alice, data=good_spkac(challenge), session_binding=SESSION)
    assert request.kind == RequestKind.SPKAC
    roca_der = base64.b64decode(build_spkac(roca_key(), challenge).removeprefix("SPKAC="))
    EnrollmentRequest.objects.filter(pk=request.pk).update(request_der=roca_der)

    result = flows.approve(request_id=request.pk)

    assert result.status == RequestStatus.FAILED
    assert "vulnerable chip or library" in result.reason
    assert not Certificate.objects.exists()
