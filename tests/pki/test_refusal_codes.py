"""Refusal codes of a submitted CSR (ca.pki.csr.parse_csr, no database): input that never was a request
is told from a request that was cut off or altered on its way.

- **Not a certificate request at all** (:data:`ca.pki.errors.NOT_A_REQUEST_AT_ALL`): random text, a
  certificate or a private key pasted instead, a public key, a PEM block of another type, DER of something
  else. The message says to submit the request, never that it was "cut" or "altered".
- **Cut off or altered** (:data:`ca.pki.errors.DAMAGED`): PEM armour of a request whose body is cut or
  changed, or DER (or its bare base64) that starts as a request does and stops early. The message says to
  copy the whole file again.

Every refusal carries a stable code (its value is what another layer keys its own sentences on) and the
parameters its sentence names.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.pki.csr import parse_csr
from ca.pki.der import leading_tags
from ca.pki.errors import DAMAGED, NOT_A_REQUEST_AT_ALL, Refusal, RequestRefused
from ca.pki.spkac import parse_spkac

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CSR_PEM = (FIXTURES / "openssl-ec-p256.csr.pem").read_bytes()
CSR_DER = (FIXTURES / "openssl-rsa2048.csr.der").read_bytes()
CERT_PEM = (FIXTURES / "selfsigned-cert.pem").read_bytes()
KEY_PEM = (FIXTURES / "openssl-ec-p256.key.pem").read_bytes()
_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = _KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
PUBLIC_DER = _KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
_BODY = b"".join(line for line in CSR_PEM.splitlines() if not line.startswith(b"-----"))
_RNG = random.Random(22)


def _armoured(body: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"\n-----END CERTIFICATE REQUEST-----\n"


NOT_REQUESTS = [
    pytest.param("hello world", Refusal.NOT_A_REQUEST, id="two-words"),
    pytest.param("test", Refusal.NOT_A_REQUEST, id="one-word-that-is-base64-shaped"),
    pytest.param("I would like a certificate for my laptop, please.", Refusal.NOT_A_REQUEST, id="a-sentence"),
    pytest.param(
        base64.b64encode(b"hello world, this is no request"), Refusal.NOT_A_REQUEST, id="base64-of-text"
    ),
    pytest.param(base64.b64encode(_RNG.randbytes(300)), Refusal.NOT_A_REQUEST, id="base64-of-random-bytes"),
    pytest.param(
        b"\x30\x82\x01\x00" + _RNG.randbytes(300), Refusal.NOT_A_REQUEST, id="random-der-like-bytes"
    ),
    pytest.param(_RNG.randbytes(400), Refusal.NOT_A_REQUEST, id="random-bytes"),
    pytest.param(CERT_PEM, Refusal.CERTIFICATE, id="certificate-pem"),
    pytest.param(
        b"".join(line for line in CERT_PEM.splitlines() if not line.startswith(b"-----")),
        Refusal.CERTIFICATE,
        id="certificate-bare-base64",
    ),
    pytest.param(KEY_PEM, Refusal.PRIVATE_KEY, id="private-key-pem"),
    pytest.param(PUBLIC_PEM, Refusal.NOT_A_REQUEST, id="public-key-pem"),
    pytest.param(PUBLIC_DER, Refusal.NOT_A_REQUEST, id="public-key-der"),
    pytest.param(base64.b64encode(PUBLIC_DER), Refusal.NOT_A_REQUEST, id="public-key-bare-base64"),
    pytest.param(PUBLIC_DER[:20], Refusal.NOT_A_REQUEST, id="public-key-der-cut"),
]

DAMAGED_REQUESTS = [
    pytest.param(CSR_PEM[: len(CSR_PEM) // 2], Refusal.TRUNCATED, id="pem-cut-in-half"),
    pytest.param(
        CSR_PEM.replace(b"-----END CERTIFICATE REQUEST-----", b""), Refusal.TRUNCATED, id="no-end-line"
    ),
    pytest.param(_armoured(_BODY[: len(_BODY) // 8 * 4]), Refusal.TRUNCATED, id="armour-around-half-a-body"),
    pytest.param(_armoured(_BODY[:-5]), Refusal.BAD_ENCODING, id="armoured-body-cut-mid-quad"),
    pytest.param(_armoured(_BODY.replace(b"M", b"!", 1)), Refusal.BAD_ENCODING, id="armoured-body-altered"),
    pytest.param(
        _armoured(base64.b64encode(b"\x30\x03\x02\x01\x05")),
        Refusal.MALFORMED,
        id="armour-around-another-structure",
    ),
    pytest.param(CSR_DER[:200], Refusal.TRUNCATED, id="der-cut-short"),
    pytest.param(base64.b64encode(CSR_DER[:200]), Refusal.TRUNCATED, id="bare-base64-of-a-cut-der"),
    pytest.param(base64.b64encode(CSR_DER)[:-7], Refusal.TRUNCATED, id="bare-base64-cut-mid-quad"),
]


def refusal(data: bytes | str) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        parse_csr(data=data)
    return caught.value


@pytest.mark.parametrize(("data", "code"), NOT_REQUESTS)
def test_it_says_input_that_never_was_a_request_is_not_one(data: bytes | str, code: Refusal) -> None:
    refused = refusal(data)

    assert refused.code is code
    assert refused.code in NOT_A_REQUEST_AT_ALL
    assert "cut" not in refused.message
    assert "altered" not in refused.message
    assert "again" not in refused.message.replace("make a new one", "")  # nothing to copy again


@pytest.mark.parametrize(("data", "code"), DAMAGED_REQUESTS)
def test_it_says_a_cut_or_altered_request_is_damaged_and_to_copy_it_again(
    data: bytes | str, code: Refusal
) -> None:
    refused = refusal(data)

    assert refused.code is code
    assert refused.code in DAMAGED
    assert "again" in refused.message
    assert "not a certificate request" not in refused.message


def test_the_two_families_do_not_overlap() -> None:
    assert not NOT_A_REQUEST_AT_ALL & DAMAGED


@pytest.mark.parametrize(
    ("data", "params"),
    [
        pytest.param(PUBLIC_PEM, {"label": "PUBLIC KEY"}, id="pem-label"),
        pytest.param(CSR_PEM + CSR_PEM, {"count": 2}, id="block-count"),
        pytest.param(b"A" * 17000, {"size": 17000, "limit_kib": 16}, id="size-and-limit"),
        pytest.param(
            CSR_PEM.replace(b"-----END CERTIFICATE REQUEST-----", b""), {"missing": "end_line"}, id="end-line"
        ),
        pytest.param("hello world", {}, id="none"),
    ],
)
def test_a_refusal_carries_the_parameters_its_sentence_names(
    data: bytes | str, params: dict[str, object]
) -> None:
    assert refusal(data).params == params


def test_the_codes_are_stable_strings() -> None:
    # Other layers key their sentences on these values: renaming one breaks them.
    assert {code.value for code in (*NOT_A_REQUEST_AT_ALL, *DAMAGED)} == {
        "not_a_request",
        "certificate",
        "private_key",
        "truncated",
        "bad_encoding",
        "malformed",
    }


@pytest.mark.parametrize(
    ("data", "tags"),
    [
        pytest.param(CSR_DER, (0x30, 0x30, 0x02), id="request"),
        pytest.param(CSR_DER[:12], (0x30, 0x30, 0x02), id="request-cut-short"),
        pytest.param(PUBLIC_DER, (0x30, 0x30, 0x06), id="public-key"),
        pytest.param(b"\x04\x00", (0x04,), id="primitive"),
        pytest.param(b"", (), id="nothing"),
        pytest.param(b"\x30\x80\x30", (0x30,), id="indefinite-length"),
    ],
)
def test_leading_tags_tell_what_a_value_is_meant_to_be_even_when_cut(
    data: bytes, tags: tuple[int, ...]
) -> None:
    assert leading_tags(data) == tags


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param("hello", Refusal.NOT_A_REQUEST, id="a-word-that-is-base64-shaped"),
        pytest.param("SPKAC=hello", Refusal.NOT_A_REQUEST, id="prefixed-word"),
        pytest.param("SPKAC=this is not base64!", Refusal.NOT_A_REQUEST, id="prose"),
        pytest.param(CSR_PEM, Refusal.NOT_A_REQUEST, id="a-csr-instead"),
        pytest.param(KEY_PEM, Refusal.PRIVATE_KEY, id="private-key"),
        pytest.param("SPKAC=MIIC=QzCC", Refusal.BAD_ENCODING, id="an-spkac-start-altered"),
    ],
)
def test_an_spkac_that_never_was_one_is_told_from_an_altered_one(data: bytes | str, code: Refusal) -> None:
    with pytest.raises(RequestRefused) as caught:
        parse_spkac(data=data)

    assert caught.value.code is code
    if code in NOT_A_REQUEST_AT_ALL:
        assert "altered" not in caught.value.message
        assert "cut" not in caught.value.message
