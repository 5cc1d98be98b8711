"""The PKI core's refusals (a code and parameters, ca.pki.errors) as sentences in the person's language
(enroll.refusals): every code has one, in English and German, with the parameters it names filled in."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import translation

from ca.pki.csr import parse_csr
from ca.pki.errors import Refusal, RequestRefused
from enroll import refusals
from tests.helpers import fixture_bytes

pytestmark = pytest.mark.usefixtures("german")

#: (code, parameters, English words, German words): the sentence of the code names the parameters.
CASES = [
    (Refusal.EMPTY, {}, "the request is empty", "Die Anforderung ist leer"),
    (Refusal.TOO_LARGE, {"size": 20000, "limit_kib": 16}, "20000 bytes; a request is at most 16 KiB",
     "20000 Bytes groß; eine Anforderung hat höchstens 16 KiB"),
    (Refusal.TOO_LARGE, {}, "too large for a certificate request", "zu groß für eine Zertifikatsanforderung"),
    (Refusal.PRIVATE_KEY, {}, "This is a private key", "Das ist ein privater Schlüssel"),
    (Refusal.CERTIFICATE, {}, "This is a certificate, not a certificate request",
     "Das ist ein Zertifikat, keine Zertifikatsanforderung"),
    (Refusal.MULTIPLE, {"count": 3}, "holds 3 objects", "enthält 3 Objekte"),
    (Refusal.MULTIPLE, {}, "more than one request", "mehr als eine Anforderung"),
    (Refusal.NOT_A_REQUEST, {"label": "PUBLIC KEY"}, "PEM block of type “PUBLIC KEY”",
     "PEM-Block vom Typ „PUBLIC KEY“"),
    (Refusal.NOT_A_REQUEST, {}, "This is not a certificate request", "Das ist keine Zertifikatsanforderung"),
    (Refusal.BAD_ENCODING, {}, "not valid base64", "kein gültiges Base64"),
    (Refusal.TRUNCATED, {"missing": "end_line"}, "no matching -----END line", "passende -----END-Zeile"),
    (Refusal.TRUNCATED, {}, "cut off before its end", "vor ihrem Ende abgeschnitten"),
    (Refusal.MALFORMED, {}, "The request is damaged", "Die Anforderung ist beschädigt"),
    (Refusal.BAD_SIGNATURE, {}, "signature does not match", "Signatur der Anforderung passt nicht"),
    (Refusal.SIGNATURE_ALGORITHM, {"hash": "SHA-1"}, "signed with SHA-1", "mit SHA-1 signiert"),
    (Refusal.SIGNATURE_ALGORITHM, {}, "signature algorithm is not one", "Signaturalgorithmus"),
    (Refusal.KEY_TYPE, {}, "ECDSA P-256 or RSA 3072", "ECDSA-P-256- oder RSA-3072-Schlüssel"),
    (Refusal.KEY_SIZE, {"bits": 1024}, "has 1024 bits", "hat 1024 Bit"),
    (Refusal.KEY_SIZE, {}, "size is not accepted", "Länge des RSA-Schlüssels"),
    (Refusal.RSA_EXPONENT, {"exponent": 3}, "public exponent 3;", "Exponenten 3;"),
    (Refusal.RSA_EXPONENT, {}, "only 65537 is", "nur 65537"),
    (Refusal.RSA_SMALL_FACTOR, {}, "small prime factor", "kleinen Primfaktor"),
    (Refusal.RSA_CLOSE_PRIMES, {}, "Fermat factoring", "Fermat-Faktorisierung"),
    (Refusal.RSA_ROCA, {}, "CVE-2017-15361", "ROCA-Schwachstelle"),
    (Refusal.EC_CURVE, {"curve": "secp256k1"}, "uses curve secp256k1", "elliptische Kurve secp256k1"),
    (Refusal.EC_CURVE, {}, "curve is not accepted", "Kurve des Schlüssels wird nicht akzeptiert"),
    (Refusal.KEY_ENCODING, {}, "not encoded the standard way", "nicht standardgemäß kodiert"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "params", "english", "german"), CASES)
def test_a_refusal_code_and_its_parameters_make_a_sentence_in_both_languages(
    code: Refusal, params: dict[str, object], english: str, german: str
) -> None:
    with translation.override("en"):
        in_english = refusals.sentence(code, params)
    with translation.override("de"):
        in_german = refusals.sentence(code, params)

    assert english in in_english
    assert german in in_german
    for sentence in (in_english, in_german):
        assert "%(" not in sentence
        assert sentence.endswith(".")


def test_every_refusal_code_of_the_core_has_a_sentence_that_needs_no_parameter() -> None:
    assert set(refusals.WORDINGS) == set(Refusal)
    for code, wordings in refusals.WORDINGS.items():
        assert wordings[-1].needs == frozenset(), code
    assert {code for code, *_ in CASES} == set(Refusal)


def test_an_unknown_code_from_a_newer_core_still_gets_a_sentence() -> None:
    with translation.override("de"):
        assert refusals.sentence("something_new", {"x": 1}).startswith("Die Anforderung wurde abgelehnt.")


def test_english_shows_the_cores_own_message_and_german_the_sentence() -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_csr(data=fixture_bytes("selfsigned-cert.pem"))

    with translation.override("en"):
        assert refusals.describe(refused.value) == refused.value.message
    with translation.override("de"):
        assert refusals.describe(refused.value).startswith(
            "Das ist ein Zertifikat, keine Zertifikatsanforderung."
        )


@pytest.mark.django_db
def test_the_new_request_page_refuses_in_german(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("portal:request-new"),
        {"csr_text": "Ich hätte gern ein Zertifikat für meinen Laptop."},
        HTTP_ACCEPT_LANGUAGE="de",
    )

    assert "Das ist keine Zertifikatsanforderung." in response.content.decode()
