"""The OCSP responder's GET form over HTTP (RFC 6960 A.1, RFC 5019 5): what a path can hold.

nginx puts the base64 request, URL-escaped (``%2F``, ``%2B``, ``%3D``), in the last path segment; WSGI
servers hand Django the path already unescaped. A path too long, escaped oddly or holding no base64 is
answered ``malformedRequest`` (an OCSP response, HTTP 200), never a 4xx or 5xx page. A cacheable answer's
``Cache-Control: max-age`` and ``Expires`` never reach past its nextUpdate (caches in front of the portal
must not make a revocation wait longer than ENROLL_OCSP_VALIDITY_SECONDS).
"""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.contrib.auth.models import User
from django.test import Client
from django.utils.http import parse_http_date
from pytest_django import Settings

from ca.models import Certificate, CertificateAuthority
from ca.views import MAX_OCSP_REQUEST_BYTES

pytestmark = pytest.mark.django_db

RESPONDER = "/pki/ocsp/"


@pytest.fixture
def certificate(ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]) -> Certificate:
    return issue_for(alice)


def request_der(certificate: Certificate, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate.x509,
        certificate.ca.certificate,
        algorithm or hashes.SHA1(),  # noqa: S303 (nginx's CertIDs use SHA-1)
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


def answer_to(client: Client, path: str) -> ocsp.OCSPResponse:
    response = client.get(path)
    assert response.status_code == 200, (path[:80], response.status_code)
    assert response["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def an_escaped_request(certificate: Certificate) -> str:
    """A request whose base64 has ``/``, ``+`` and ``=`` (SHA-1 CertIDs of some serials do not): the
    first of a few hash algorithms that gives all three, escaped as nginx escapes them."""
    for algorithm in (hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512(), hashes.SHA224()):  # noqa: S303
        encoded = base64.b64encode(request_der(certificate, algorithm)).decode()
        if all(c in encoded for c in "/+="):
            return urllib.parse.quote(encoded, safe="")
    pytest.skip("no CertID of this certificate has /, + and = in its base64")


def test_a_request_escaped_as_nginx_escapes_it_is_answered(client: Client, certificate: Certificate) -> None:
    escaped = urllib.parse.quote(base64.b64encode(request_der(certificate)).decode(), safe="")
    answer = answer_to(client, RESPONDER + escaped)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == certificate.serial_int


def test_slashes_plus_and_padding_escaped_in_the_path_are_answered(
    client: Client, certificate: Certificate
) -> None:
    path = RESPONDER + an_escaped_request(certificate)
    assert "%2F" in path
    answer = answer_to(client, path)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD


def oversized(certificate: Certificate) -> str:
    """A well-formed request padded past the responder's limit (a DER OCSP request of more than 4 KB)."""
    der = request_der(certificate)
    return base64.b64encode(der + b"\0" * (MAX_OCSP_REQUEST_BYTES + 1 - len(der))).decode()


@pytest.mark.parametrize(
    "make_path",
    [
        pytest.param(lambda c: RESPONDER + oversized(c), id="over 4 KB of base64"),
        pytest.param(lambda c: RESPONDER + urllib.parse.quote(oversized(c), safe=""), id="over 4 KB escaped"),
        pytest.param(lambda c: RESPONDER + "A" * 100_000, id="100 KB of A"),
        pytest.param(lambda c: RESPONDER + "%FF%FE%00%01", id="escaped bytes that are no UTF-8"),
        pytest.param(lambda c: RESPONDER + "%00", id="an escaped NUL"),
        pytest.param(lambda c: RESPONDER + "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", id="escaped dot-dot"),
        pytest.param(lambda c: RESPONDER + "%25%32%46", id="double escaped"),
        pytest.param(lambda c: RESPONDER + "%E2%82%AC%C3%A9", id="escaped non-ASCII UTF-8"),
        pytest.param(
            lambda c: RESPONDER + "MAo%0AMAo=",
            id="an escaped newline inside base64",
        ),
        pytest.param(lambda c: RESPONDER + "%", id="a lone percent sign"),
        pytest.param(lambda c: RESPONDER + "%zz", id="an invalid escape"),
        pytest.param(lambda c: RESPONDER + "MA==/MA==/MA==", id="slashes between base64 pieces"),
        pytest.param(
            lambda c: RESPONDER + base64.urlsafe_b64encode(b"\xfb\xff" + request_der(c)).decode(),
            id="URL-safe base64 of garbage",
        ),
        pytest.param(
            lambda c: RESPONDER + base64.b64encode(b"\x30\x80" * 2000).decode(), id="indefinite DER"
        ),
        pytest.param(lambda c: f"/pki/{c.ca.slug}/ocsp/" + oversized(c), id="over 4 KB at the per-CA URL"),
    ],
)
def test_a_get_path_that_holds_no_request_is_a_malformed_request(
    client: Client, certificate: Certificate, make_path: Callable[[Certificate], str]
) -> None:
    answer = answer_to(client, make_path(certificate))
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_cache_headers_never_reach_past_next_update(
    client: Client, certificate: Certificate, settings: Settings
) -> None:
    response = client.get(RESPONDER + urllib.parse.quote(base64.b64encode(request_der(certificate)).decode()))
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.next_update_utc is not None
    assert answer.this_update_utc is not None
    validity = (answer.next_update_utc - answer.this_update_utc).total_seconds()
    assert validity == settings.ENROLL_OCSP_VALIDITY_SECONDS
    max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 0 <= max_age <= validity
    now = dt.datetime.now(dt.UTC)
    assert now + dt.timedelta(seconds=max_age) <= answer.next_update_utc + dt.timedelta(seconds=1)
    assert parse_http_date(response["Expires"]) == int(answer.next_update_utc.timestamp())
