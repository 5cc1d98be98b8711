"""Parsing a submitted certificate request: ca.pki.csr.parse_csr (no database).

Every good fixture is accepted in every tolerated form; every bad input is refused with its
:class:`~ca.pki.errors.Refusal` code and a message in plain words that names the problem.
"""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from ca.pki import csr as csr_module
from ca.pki.csr import MAX_SUBMISSION_BYTES, ParsedRequest, parse_csr
from ca.pki.errors import Refusal, RequestRefused

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def pem_body(pem: bytes) -> bytes:
    """The base64 lines of a one-block PEM, joined without line breaks."""
    return b"".join(
        line.strip() for line in pem.splitlines() if line.strip() and not line.startswith(b"-----")
    )


def key_text_pieces(data: bytes) -> list[str]:
    """16-character pieces of a submitted key as text (its base64, or its DER as base64 and hex)."""
    if data[:1] == b"\x30":  # DER
        texts = [base64.b64encode(data).decode(), data.hex(), data.hex().upper()]
    else:
        texts = [line.decode() for line in data.splitlines() if not line.startswith(b"-----")]
    pieces = [text[i : i + 16] for text in texts for i in range(0, len(text) - 15, 16)]
    assert pieces
    return pieces


def refusal(data: bytes | str) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        parse_csr(data=data)
    return caught.value


def private_key_from_fixture(name: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(fixture(name), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def csr_signed_with(algorithm: hashes.SHA224 | hashes.SHA256) -> bytes:
    key = private_key_from_fixture("openssl-ec-p256.key.pem")
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sha224-signed")]))
        .sign(key, algorithm)
    )
    return request.public_bytes(serialization.Encoding.PEM)


# --- inputs, made once -------------------------------------------------------------------------------

GOOD_PEM = fixture("openssl-rsa2048.csr.pem")
GOOD_DER = fixture("openssl-rsa2048.csr.der")
EC_PEM = fixture("openssl-ec-p256.csr.pem")
EC_DER = base64.b64decode(pem_body(EC_PEM))
CERT_PEM = fixture("selfsigned-cert.pem")
CERT_DER = x509.load_pem_x509_certificate(CERT_PEM).public_bytes(serialization.Encoding.DER)

_RSA_KEY = private_key_from_fixture("openssl-rsa2048.key.pem")
_EC_KEY = private_key_from_fixture("openssl-ec-p256.key.pem")
_PEM, _DER = serialization.Encoding.PEM, serialization.Encoding.DER
_PKCS8, _TRADITIONAL = serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL
_PLAIN = serialization.NoEncryption()
_ENCRYPTED = serialization.BestAvailableEncryption(b"a passphrase for the test")


def _last_byte_flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


PRIVATE_KEYS: dict[str, bytes] = {
    "pkcs8-pem-rsa": fixture("openssl-rsa2048.key.pem"),
    "pkcs8-pem-ec": fixture("openssl-ec-p256.key.pem"),
    "rsa-private-key-pem": _RSA_KEY.private_bytes(_PEM, _TRADITIONAL, _PLAIN),
    "ec-private-key-pem": _EC_KEY.private_bytes(_PEM, _TRADITIONAL, _PLAIN),
    "encrypted-private-key-pem": _EC_KEY.private_bytes(_PEM, _PKCS8, _ENCRYPTED),
    "truncated-private-key-pem": fixture("openssl-rsa2048.key.pem")[:400],
    "private-key-pem-after-the-csr": GOOD_PEM + fixture("openssl-ec-p256.key.pem"),
    "pkcs8-der-ec": _EC_KEY.private_bytes(_DER, _PKCS8, _PLAIN),
    "pkcs8-der-rsa": _RSA_KEY.private_bytes(_DER, _PKCS8, _PLAIN),
    "encrypted-pkcs8-der": _EC_KEY.private_bytes(_DER, _PKCS8, _ENCRYPTED),
    "sec1-der-ec": _EC_KEY.private_bytes(_DER, _TRADITIONAL, _PLAIN),
    "pkcs8-der-followed-by-bytes": _EC_KEY.private_bytes(_DER, _PKCS8, _PLAIN) + b"\x00trailing",
    "pkcs8-der-as-bare-base64": base64.b64encode(_EC_KEY.private_bytes(_DER, _PKCS8, _PLAIN)),
    # Recognised without RSA key validation (which rejects this one, and costs seconds for a big key).
    "rsa-der-with-a-broken-crt-value": _last_byte_flipped(_RSA_KEY.private_bytes(_DER, _TRADITIONAL, _PLAIN)),
}

_rng = random.Random(20240611)
RANDOM_BYTES = bytes([0x8F]) + _rng.randbytes(700)  # 0x8F: not a DER SEQUENCE, not text
RANDOM_SEQUENCE = bytes([0x30, 0x82, 0x01, 0x00]) + _rng.randbytes(300)  # looks like DER, is not

_lines = GOOD_PEM.splitlines()


def _csr_of_version(version: int) -> bytes:
    """EC_DER claiming another PKCS#10 version (only v1, 0, exists): `cryptography` refuses it with an
    InvalidVersion, which is no ValueError."""
    der = bytearray(EC_DER)
    at = der.index(b"\x02\x01\x00")  # the first INTEGER: CertificationRequestInfo's version
    der[at + 2] = version
    return bytes(der)


def _tampered_subject() -> bytes:
    der = bytearray(EC_DER)
    at = der.index(b"fixture-openssl-ec-p256")
    der[at] ^= 0x01  # "fixture" -> "gixture": the signed CertificationRequestInfo changed
    return bytes(der)


# --- accepted ----------------------------------------------------------------------------------------

GOOD_FIXTURES = [
    ("openssl-rsa2048.csr.pem", "RSA 2048"),
    ("openssl-rsa3072.csr.pem", "RSA 3072"),
    ("openssl-rsa4096.csr.pem", "RSA 4096"),
    ("openssl-ec-p256.csr.pem", "ECDSA P-256"),
    ("openssl-ec-p384.csr.pem", "ECDSA P-384"),
    ("openssl-ec-p256-sha512.csr.pem", "ECDSA P-256"),
    ("openssl-rsa2048.csr.der", "RSA 2048"),
    ("openssl-rsa2048-crlf.csr.pem", "RSA 2048"),
    ("openssl-rsa2048-pss.csr.pem", "RSA 2048"),
    ("keytool-rsa2048.csr.pem", "RSA 2048"),
    ("keytool-ec-p256.csr.pem", "ECDSA P-256"),
    ("openssl-ec-p256-evil-ext.csr.pem", "ECDSA P-256"),
]


@pytest.mark.parametrize(("name", "description"), GOOD_FIXTURES, ids=[name for name, _ in GOOD_FIXTURES])
def test_it_accepts_every_good_fixture(name: str, description: str) -> None:
    parsed = parse_csr(data=fixture(name))

    assert isinstance(parsed, ParsedRequest)
    assert parsed.key.description == description
    assert parsed.csr.is_signature_valid


def test_it_accepts_keytools_new_certificate_request_label() -> None:
    data = fixture("keytool-rsa2048.csr.pem")
    assert data.startswith(b"-----BEGIN NEW CERTIFICATE REQUEST-----")

    assert parse_csr(data=data).requested_subject == "CN=fixture-keytool-rsa2048"


def test_it_accepts_an_rsa_pss_signed_request() -> None:
    parsed = parse_csr(data=fixture("openssl-rsa2048-pss.csr.pem"))

    assert parsed.csr.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert isinstance(parsed.csr.signature_algorithm_parameters, padding.PSS)
    assert isinstance(parsed.csr.signature_hash_algorithm, hashes.SHA256)
    assert parsed.key.description == "RSA 2048"


SAME_REQUEST_FORMS: dict[str, bytes | str] = {
    "pem": GOOD_PEM,
    "der": GOOD_DER,
    "str": GOOD_PEM.decode("ascii"),
    "crlf-fixture": fixture("openssl-rsa2048-crlf.csr.pem"),
    "crlf-blank-lines-and-spaces": b"\r\n\r\n  " + b"  \r\n".join(_lines) + b"   \r\n\r\n\r\n",
    "indented-lines": b"\n".join(b"    " + line for line in _lines),
    "blank-lines-inside-the-block": b"\n".join([_lines[0], b"", *_lines[1:-1], b"", _lines[-1]]),
    "text-before-and-after-the-block": b"Certificate Request for alice:\n" + GOOD_PEM + b"\n(end)\n",
    "bare-base64-in-lines": b"\n".join(_lines[1:-1]),
    "bare-base64-one-line": pem_body(GOOD_PEM),
    "bare-base64-str-with-crlf": "\r\n".join(line.decode() for line in _lines[1:-1]) + "\r\n",
}


@pytest.mark.parametrize("data", SAME_REQUEST_FORMS.values(), ids=SAME_REQUEST_FORMS.keys())
def test_it_reads_the_same_request_from_every_tolerated_form(data: bytes | str) -> None:
    parsed = parse_csr(data=data)

    assert parsed.der == GOOD_DER
    assert parsed.sha256 == hashlib.sha256(GOOD_DER).hexdigest()
    assert parsed.requested_subject == "CN=fixture-openssl-rsa2048"


def test_it_accepts_a_submission_of_exactly_the_size_cap() -> None:
    data = GOOD_PEM + b"\n" * (MAX_SUBMISSION_BYTES - len(GOOD_PEM))
    assert len(data) == MAX_SUBMISSION_BYTES

    assert parse_csr(data=data).der == GOOD_DER


def test_it_accepts_a_request_signed_with_sha256_made_by_cryptography() -> None:
    assert parse_csr(data=csr_signed_with(hashes.SHA256())).key.description == "ECDSA P-256"


# --- what the parsed request tells ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csr_name", "key_name"),
    [
        ("openssl-rsa2048.csr.pem", "openssl-rsa2048.key.pem"),
        ("openssl-ec-p256.csr.pem", "openssl-ec-p256.key.pem"),
        ("openssl-ec-p384.csr.pem", "openssl-ec-p384.key.pem"),
    ],
)
def test_its_spki_sha256_is_the_sha256_of_the_keys_subject_public_key_info(
    csr_name: str, key_name: str
) -> None:
    spki = (
        private_key_from_fixture(key_name)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    parsed = parse_csr(data=fixture(csr_name))

    assert parsed.key.spki_sha256 == hashlib.sha256(spki).hexdigest()
    assert parsed.public_key_der == spki


def test_it_describes_the_key_with_algorithm_and_size() -> None:
    rsa_key = parse_csr(data=fixture("openssl-rsa3072.csr.pem")).key
    ec_key = parse_csr(data=fixture("openssl-ec-p384.csr.pem")).key

    assert (rsa_key.algorithm, rsa_key.size, rsa_key.description) == ("RSA", 3072, "RSA 3072")
    assert (ec_key.algorithm, ec_key.size, ec_key.description) == ("ECDSA", 384, "ECDSA P-384")


def test_its_sha256_is_over_the_canonical_der_not_the_submitted_text() -> None:
    parsed = parse_csr(data=fixture("openssl-rsa2048-crlf.csr.pem"))

    assert parsed.der == GOOD_DER
    assert parsed.sha256 == hashlib.sha256(GOOD_DER).hexdigest()
    assert len(parsed.sha256) == 64


def test_it_reports_the_requested_subject_without_trusting_it() -> None:
    parsed = parse_csr(data=fixture("openssl-ec-p256-evil-ext.csr.pem"))

    assert parsed.requested_subject == "O=Evil Corp,CN=admin"


# --- refused -----------------------------------------------------------------------------------------

REFUSALS = [
    pytest.param(b"", Refusal.EMPTY, "nothing was submitted", id="empty"),
    pytest.param("", Refusal.EMPTY, "nothing was submitted", id="empty-str"),
    pytest.param(b"  \r\n\t\n  ", Refusal.EMPTY, "nothing was submitted", id="whitespace"),
    pytest.param(
        b"-----BEGIN CERTIFICATE REQUEST-----\n\n-----END CERTIFICATE REQUEST-----\n",
        Refusal.EMPTY,
        "empty",
        id="empty-pem-block",
    ),
    pytest.param(random.Random(17).randbytes(17 * 1024), Refusal.TOO_LARGE, "16 KiB", id="17-KiB-of-garbage"),
    pytest.param(GOOD_PEM * 20, Refusal.TOO_LARGE, "at most 16 KiB", id="too-large-even-if-made-of-csrs"),
    pytest.param(
        GOOD_PEM + b"\n" * (MAX_SUBMISSION_BYTES - len(GOOD_PEM) + 1),
        Refusal.TOO_LARGE,
        "16 KiB",
        id="one-byte-over-the-cap",
    ),
    pytest.param(CERT_PEM, Refusal.CERTIFICATE, "not a certificate request", id="certificate-pem"),
    pytest.param(CERT_DER, Refusal.CERTIFICATE, "not a certificate request", id="certificate-der"),
    pytest.param(
        CERT_DER + b"\x00\x00",
        Refusal.CERTIFICATE,
        "not a certificate request",
        id="certificate-der-and-bytes",
    ),
    pytest.param(GOOD_PEM + EC_PEM, Refusal.MULTIPLE, "exactly one", id="two-csrs-in-one-pem-text"),
    pytest.param(GOOD_PEM + CERT_PEM, Refusal.MULTIPLE, "exactly one", id="csr-and-certificate-pem"),
    pytest.param(GOOD_DER + b"\x00extra", Refusal.MULTIPLE, "extra data", id="der-csr-followed-by-bytes"),
    pytest.param(GOOD_DER + EC_DER, Refusal.MULTIPLE, "exactly one", id="two-der-csrs"),
    pytest.param(
        GOOD_PEM.replace(b"-----END CERTIFICATE REQUEST-----", b""),
        Refusal.TRUNCATED,
        "no matching -----END",
        id="pem-without-end-line",
    ),
    pytest.param(GOOD_PEM[: len(GOOD_PEM) // 2], Refusal.TRUNCATED, "incomplete", id="pem-cut-in-half"),
    pytest.param(
        b"\n".join([*_lines[:4], _lines[-1]]),
        Refusal.TRUNCATED,
        "incomplete",
        id="base64-lines-missing-inside",
    ),
    pytest.param(
        b"\n".join([*_lines[:-2], _lines[-2][:-3], _lines[-1]]),
        Refusal.BAD_ENCODING,
        "base64",
        id="base64-cut-mid-line",
    ),
    pytest.param(
        GOOD_PEM.replace(b"MII", b"M!I", 1), Refusal.BAD_ENCODING, "not valid base64", id="invalid-base64"
    ),
    pytest.param(
        b"\n".join([*_lines[:3], b"this line is not base64 at all!", *_lines[3:]]),
        Refusal.BAD_ENCODING,
        "base64",
        id="prose-inside-the-block",
    ),
    pytest.param(GOOD_DER[:300], Refusal.TRUNCATED, "incomplete", id="der-cut-short"),
    pytest.param(RANDOM_BYTES, Refusal.NOT_A_REQUEST, "not a certificate request", id="random-bytes"),
    pytest.param(
        RANDOM_SEQUENCE,
        Refusal.NOT_A_REQUEST,
        "not a certificate request",
        id="random-bytes-looking-like-der",
    ),
    pytest.param(b"\x00" * 64, Refusal.NOT_A_REQUEST, "not a certificate request", id="zero-bytes"),
    pytest.param("Bonjour, voici ma clé", Refusal.NOT_A_REQUEST, "not a certificate request", id="prose"),
    pytest.param(
        _EC_KEY.public_key().public_bytes(_PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        Refusal.NOT_A_REQUEST,
        "PUBLIC KEY",
        id="public-key-pem",
    ),
    pytest.param(
        _EC_KEY.public_key().public_bytes(_DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        Refusal.NOT_A_REQUEST,
        "not a certificate request",
        id="public-key-der",
    ),
    pytest.param(
        CERT_PEM.replace(b"CERTIFICATE", b"PKCS7"),
        Refusal.NOT_A_REQUEST,
        "type 'PKCS7'",
        id="pem-of-another-label",
    ),
    pytest.param(
        fixture("tampered-signature.csr.pem"), Refusal.BAD_SIGNATURE, "altered", id="tampered-signature"
    ),
    pytest.param(_tampered_subject(), Refusal.BAD_SIGNATURE, "does not match", id="tampered-subject"),
    pytest.param(_csr_of_version(13), Refusal.MALFORMED, "not a valid PKCS#10", id="unknown-version"),
    pytest.param(fixture("openssl-rsa2048-md5.csr.pem"), Refusal.SIGNATURE_ALGORITHM, "MD5", id="md5-signed"),
    pytest.param(
        fixture("openssl-rsa2048-sha1.csr.pem"), Refusal.SIGNATURE_ALGORITHM, "SHA1", id="sha1-signed"
    ),
    pytest.param(csr_signed_with(hashes.SHA224()), Refusal.SIGNATURE_ALGORITHM, "SHA224", id="sha224-signed"),
    pytest.param(fixture("openssl-rsa1024.csr.pem"), Refusal.KEY_SIZE, "1024 bits", id="rsa1024"),
    pytest.param(fixture("openssl-rsa2560.csr.pem"), Refusal.KEY_SIZE, "2560 bits", id="rsa2560"),
    pytest.param(fixture("openssl-rsa2048-e3.csr.pem"), Refusal.RSA_EXPONENT, "65537", id="rsa-exponent-3"),
    pytest.param(
        fixture("crafted-rsa2048-smallfactor.csr.pem"),
        Refusal.RSA_SMALL_FACTOR,
        "small prime factor",
        id="rsa-small-factor",
    ),
    pytest.param(
        fixture("crafted-rsa2048-fermat.csr.pem"), Refusal.RSA_CLOSE_PRIMES, "Fermat", id="rsa-fermat"
    ),
    pytest.param(fixture("openssl-dsa2048.csr.pem"), Refusal.KEY_TYPE, "DSA keys", id="dsa"),
    pytest.param(fixture("openssl-ed25519.csr.pem"), Refusal.KEY_TYPE, "Ed25519", id="ed25519"),
    pytest.param(fixture("openssl-ec-p521.csr.pem"), Refusal.EC_CURVE, "secp521r1", id="ec-p521"),
    pytest.param(fixture("openssl-ec-secp256k1.csr.pem"), Refusal.EC_CURVE, "secp256k1", id="ec-secp256k1"),
]


@pytest.mark.parametrize(("data", "code", "keyword"), REFUSALS)
def test_it_refuses_bad_input_with_a_reason(data: bytes | str, code: Refusal, keyword: str) -> None:
    refused = refusal(data)

    assert refused.code is code
    assert keyword.lower() in refused.message.lower()
    assert str(refused) == refused.message
    assert "\n" not in refused.message  # one line in plain words, no traceback
    assert refused.message.endswith((".", ")"))


@pytest.mark.parametrize("data", PRIVATE_KEYS.values(), ids=PRIVATE_KEYS.keys())
def test_it_refuses_a_private_key_without_echoing_it(data: bytes) -> None:
    refused = refusal(data)

    assert refused.code is Refusal.PRIVATE_KEY
    assert "never send your private key" in refused.message.lower()
    shown = " ".join([refused.message, str(refused), repr(refused), *map(str, refused.args)])
    for piece in key_text_pieces(data):
        assert piece not in shown


def test_it_checks_the_size_before_looking_at_the_content(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(data: bytes) -> bytes:
        raise AssertionError("parsed before the size check")

    monkeypatch.setattr(csr_module, "_decode", must_not_decode)
    oversized_private_key = fixture("openssl-rsa2048.key.pem") + b" " * (17 * 1024)

    refused = refusal(oversized_private_key)

    assert refused.code is Refusal.TOO_LARGE
    assert pem_body(fixture("openssl-rsa2048.key.pem"))[:32].decode() not in refused.message


def test_it_counts_the_size_of_a_str_in_utf8_bytes() -> None:
    refused = refusal("é" * (MAX_SUBMISSION_BYTES // 2 + 1))

    assert refused.code is Refusal.TOO_LARGE
    assert str(MAX_SUBMISSION_BYTES + 2) in refused.message
