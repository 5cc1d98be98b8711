"""Parsing an SPKAC: ca.pki.spkac.parse_spkac (no database), on SPKACs made by the real `openssl spkac`."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from asn1crypto import algos, core, keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ca.pki.errors import Refusal, RequestRefused
from ca.pki.spkac import (
    MAX_SPKAC_BYTES,
    ParsedSpkac,
    PublicKeyAndChallenge,
    SignedPublicKeyAndChallenge,
    check_spkac_der,
    parse_spkac,
)
from tests.harness.openssl import openssl
from tests.spkac_tools import build_spkac, key_file, load_key, spkac

pytestmark = pytest.mark.real_client

CHALLENGE = "4f1c2a9e0b7d6c5a4f1c2a9e0b7d6c5a4f1c2a9e"


def der_of(line: str) -> bytes:
    return base64.b64decode(line.removeprefix("SPKAC="))


def refusal(data: bytes | str, *, allow_md5: bool = False) -> RequestRefused:
    with pytest.raises(RequestRefused) as refused:
        parse_spkac(data=data, allow_md5=allow_md5)
    return refused.value


def spki_sha256_of_key_file(kind: str) -> str:
    public = load_key(key_file(kind)).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# --- accepted ----------------------------------------------------------------------------------------


def test_an_rsa_2048_spkac_signed_with_sha256_by_openssl_is_accepted() -> None:
    line = spkac(key_file("rsa2048"), CHALLENGE, digest="sha256")

    parsed = parse_spkac(data=line)

    assert isinstance(parsed, ParsedSpkac)
    assert parsed.key.description == "RSA 2048"
    assert parsed.challenge == CHALLENGE
    assert parsed.signature_hash == "sha256"
    assert parsed.der == der_of(line)
    assert parsed.sha256 == hashlib.sha256(der_of(line)).hexdigest()
    assert parsed.key.spki_sha256 == spki_sha256_of_key_file("rsa2048")


def test_an_ec_p256_spkac_signed_with_sha256_by_openssl_is_accepted() -> None:
    parsed = parse_spkac(data=spkac(key_file("ec-p256"), CHALLENGE, digest="sha256"))

    assert parsed.key.description == "ECDSA P-256"
    assert parsed.challenge == CHALLENGE
    assert isinstance(parsed.public_key, ec.EllipticCurvePublicKey)
    assert parsed.key.spki_sha256 == spki_sha256_of_key_file("ec-p256")


@pytest.mark.parametrize(
    "shape",
    ["bare base64", "prefix with spaces", "wrapped at 64 with CRLF", "wrapped with blanks", "bytes", "der"],
)
def test_the_prefix_whitespace_line_breaks_and_raw_der_are_tolerated(shape: str) -> None:
    line = spkac(key_file("ec-p256"), CHALLENGE)
    body = line.removeprefix("SPKAC=")
    shapes: dict[str, bytes | str] = {
        "bare base64": body,
        "prefix with spaces": f"  SPKAC = {body}\n",
        "wrapped at 64 with CRLF": "SPKAC=" + "\r\n".join(body[i : i + 64] for i in range(0, len(body), 64)),
        "wrapped with blanks": "\n\n" + " ".join(body[i : i + 10] for i in range(0, len(body), 10)) + "\n\n",
        "bytes": line.encode("ascii") + b"\n",
        "der": der_of(line),
    }

    assert parse_spkac(data=shapes[shape]).der == der_of(line)


def test_openssl_verifies_an_spkac_the_test_helper_builds(tmp_path: Path) -> None:
    """The Python builder, used for shapes openssl will not make, makes real SPKACs."""
    line = build_spkac(load_key(key_file("rsa2048")), CHALLENGE)
    (tmp_path / "built.spkac").write_text(line + "\n")

    result = openssl("spkac", "-in", str(tmp_path / "built.spkac"), "-verify", "-noout")

    assert result.returncode == 0, result.stderr.decode()
    assert b"Signature OK" in result.stdout + result.stderr
    assert parse_spkac(data=line).challenge == CHALLENGE


# --- MD5 and SHA-1 -----------------------------------------------------------------------------------


def test_an_md5_spkac_from_openssl_without_digest_is_refused_naming_the_fix() -> None:
    line = spkac(key_file("rsa2048"), CHALLENGE, digest=None)  # openssl's default: MD5

    refused = refusal(line)

    assert refused.code == Refusal.SIGNATURE_ALGORITHM
    assert "MD5" in refused.message
    assert "-digest sha256" in refused.message


def test_an_md5_spkac_is_accepted_with_the_legacy_allowance() -> None:
    parsed = parse_spkac(data=spkac(key_file("rsa2048"), CHALLENGE, digest=None), allow_md5=True)

    assert parsed.signature_hash == "md5"
    assert parsed.key.description == "RSA 2048"


def test_openssl_cannot_make_an_md5_spkac_for_an_ec_key() -> None:
    """Why the MD5 allowance only matters for RSA: openssl spkac without -digest fails outright for EC."""
    result = openssl("spkac", "-key", str(key_file("ec-p256")), "-challenge", CHALLENGE)

    assert result.returncode != 0


def test_a_sha1_spkac_is_refused_even_with_the_legacy_allowance() -> None:
    line = spkac(key_file("rsa2048"), CHALLENGE, digest="sha1")

    refused = refusal(line, allow_md5=True)

    assert refused.code == Refusal.SIGNATURE_ALGORITHM
    assert "SHA-1" in refused.message
    assert "-digest sha256" in refused.message


# --- tampering, structure, size ---------------------------------------------------------------------


def test_a_tampered_signature_is_refused() -> None:
    der = bytearray(der_of(spkac(key_file("rsa2048"), CHALLENGE)))
    der[-1] ^= 0x01  # the last byte of the signature

    refused = refusal(bytes(der))

    assert refused.code == Refusal.BAD_SIGNATURE
    assert "altered" in refused.message


def test_a_changed_challenge_breaks_the_signature() -> None:
    der = der_of(spkac(key_file("ec-p256"), CHALLENGE))
    forged = der.replace(CHALLENGE.encode(), CHALLENGE[::-1].encode())
    assert forged != der

    assert refusal(forged).code == Refusal.BAD_SIGNATURE


def test_a_signature_algorithm_that_does_not_go_with_the_key_is_refused() -> None:
    line = build_spkac(load_key(key_file("ec-p256")), CHALLENGE, algorithm="sha256_rsa")

    assert refusal(line).code == Refusal.SIGNATURE_ALGORITHM


def test_extra_data_after_the_spkac_is_refused() -> None:
    der = der_of(spkac(key_file("ec-p256"), CHALLENGE))

    refused = refusal(base64.b64encode(der + der))

    assert refused.code == Refusal.MULTIPLE
    assert "exactly one" in refused.message


def test_a_cut_spkac_is_refused_as_incomplete() -> None:
    der = der_of(spkac(key_file("ec-p256"), CHALLENGE))

    assert refusal(base64.b64encode(der[:-10])).code == Refusal.TRUNCATED


def test_a_der_sequence_that_is_not_an_spkac_is_refused() -> None:
    assert refusal(base64.b64encode(b"\x30\x03\x02\x01\x05")).code == Refusal.MALFORMED


def test_an_spkac_with_an_empty_signature_is_refused_as_malformed() -> None:
    built = SignedPublicKeyAndChallenge.load(der_of(build_spkac(load_key(key_file("ec-p256")), CHALLENGE)))
    empty = SignedPublicKeyAndChallenge(
        {
            "public_key_and_challenge": built["public_key_and_challenge"],
            "signature_algorithm": built["signature_algorithm"],
            "signature": core.OctetBitString(contents=b""),  # a BIT STRING without its unused-bits octet
        }
    )

    assert refusal(empty.dump()).code == Refusal.MALFORMED


def test_an_rsassa_pss_spkac_without_parameters_is_refused() -> None:
    line = build_spkac(load_key(key_file("rsa2048")), CHALLENGE, algorithm="rsassa_pss")

    assert refusal(line).code == Refusal.SIGNATURE_ALGORITHM


def test_another_hash_is_refused_with_the_spkac_command_not_the_csr_one() -> None:
    key = load_key(key_file("ec-p256"))
    line = build_spkac(key, CHALLENGE, algorithm="sha224_ecdsa", hash_algorithm=hashes.SHA224())

    refused = refusal(line)

    assert refused.code == Refusal.SIGNATURE_ALGORITHM
    assert "-digest sha256" in refused.message
    assert "openssl req" not in refused.message


def test_text_that_is_not_base64_is_refused() -> None:
    refused = refusal("SPKAC=this is not base64!")

    assert refused.code == Refusal.NOT_A_REQUEST
    assert "openssl spkac" in refused.message


def test_broken_base64_is_refused() -> None:
    assert refusal("SPKAC=MIIC=QzCC").code == Refusal.BAD_ENCODING


def test_an_empty_submission_is_refused() -> None:
    assert refusal("  \n").code == Refusal.EMPTY
    assert refusal("SPKAC=").code == Refusal.EMPTY


def test_an_oversized_submission_is_refused_before_parsing() -> None:
    refused = refusal("A" * (MAX_SPKAC_BYTES + 1))

    assert refused.code == Refusal.TOO_LARGE
    assert "16 KiB" in refused.message


def test_a_pasted_private_key_is_refused_and_not_echoed() -> None:
    pem = key_file("ec-p256").read_bytes()

    refused = refusal(pem)

    assert refused.code == Refusal.PRIVATE_KEY
    assert pem.splitlines()[1].decode()[:16] not in refused.message


def test_a_private_key_in_der_is_refused_as_a_private_key() -> None:
    der = load_key(key_file("ec-p256")).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    assert refusal(base64.b64encode(der)).code == Refusal.PRIVATE_KEY


def test_an_rsa_private_key_that_fails_validation_is_still_refused_as_a_private_key() -> None:
    """Private keys are recognised without RSA key validation (seconds for a big key, and not needed)."""
    der = bytearray(
        load_key(key_file("rsa2048")).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    der[-1] ^= 0x01  # the last CRT coefficient no longer fits the primes

    assert refusal(base64.b64encode(der)).code == Refusal.PRIVATE_KEY


def test_a_pem_csr_is_refused_with_a_pointer_to_the_csr_page() -> None:
    refused = refusal(b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")

    assert refused.code == Refusal.NOT_A_REQUEST
    assert "CSR" in refused.message


# --- the key policy, as for CSRs --------------------------------------------------------------------


def test_a_weak_rsa_1024_key_is_refused_by_the_key_policy() -> None:
    refused = refusal(spkac(key_file("rsa1024"), CHALLENGE))

    assert refused.code == Refusal.KEY_SIZE
    assert "1024" in refused.message


def test_an_spkac_for_an_ed25519_key_is_refused() -> None:
    """openssl spkac cannot sign with Ed25519 (it always hashes), so this one is built by hand."""
    key = ed25519.Ed25519PrivateKey.generate()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tbs = PublicKeyAndChallenge({"spki": keys.PublicKeyInfo.load(spki), "challenge": CHALLENGE})
    signed = SignedPublicKeyAndChallenge(
        {
            "public_key_and_challenge": tbs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "ed25519"}),
            "signature": key.sign(tbs.dump()),
        }
    )

    refused = refusal(signed.dump())

    assert refused.code in (Refusal.SIGNATURE_ALGORITHM, Refusal.KEY_TYPE)


def test_the_ca_recheck_applies_the_same_rules_to_the_stored_der() -> None:
    der = der_of(spkac(key_file("rsa2048"), CHALLENGE, digest=None))

    with pytest.raises(RequestRefused):
        check_spkac_der(der=der)
    assert check_spkac_der(der=der, allow_md5=True).der == der


def test_spkacs_signed_with_sha384_and_sha512_are_accepted() -> None:
    key = load_key(key_file("ec-p256"))
    for name, digest in (("sha384_ecdsa", hashes.SHA384()), ("sha512_ecdsa", hashes.SHA512())):
        parsed = parse_spkac(data=build_spkac(key, CHALLENGE, algorithm=name, hash_algorithm=digest))
        assert parsed.signature_hash == digest.name
