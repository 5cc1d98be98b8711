"""The public CA certificate and CRL endpoints, as a front server fetches them (no login)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import time_machine
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils.http import http_date
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from ca.models import Certificate, CertificateAuthority, CrlPublication, RevocationReason
from ca.services.authorities import create_ca
from ca.services.crl import crl_lifetime
from ca.services.keys import clear_key_cache, key_path
from ca.services.revocation import revoke_certificate
from tests.conftest import signed_by

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
ENDPOINTS = ["ca:cert-der", "ca:cert-pem", "ca:crl-der", "ca:crl-pem"]


def url(name: str, ca: CertificateAuthority | str) -> str:
    return reverse(name, kwargs={"slug": ca if isinstance(ca, str) else ca.slug})


def max_age(cache_control: str) -> int:
    found = re.search(r"max-age=(\d+)", cache_control)
    assert found, cache_control
    return int(found.group(1))


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def frozen_ca(frozen: time_machine.Traveller) -> CertificateAuthority:
    return create_ca(name="Frozen Root", slug="frozen-root")


# --- what is served ----------------------------------------------------------------------------------


def test_the_der_crl_is_served_as_application_pkix_crl(client: Client, ca: CertificateAuthority) -> None:
    response = client.get(url("ca:crl-der", ca))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    assert crl.issuer == ca.certificate.subject
    assert signed_by(crl, ca.certificate)
    assert response.content == bytes(CrlPublication.objects.filter(ca=ca).latest().der)


def test_the_pem_crl_holds_the_same_crl(client: Client, ca: CertificateAuthority) -> None:
    der = client.get(url("ca:crl-der", ca)).content

    response = client.get(url("ca:crl-pem", ca))

    assert response.status_code == 200
    assert response.content.startswith(b"-----BEGIN X509 CRL-----\n")
    assert response.content.rstrip().endswith(b"-----END X509 CRL-----")
    assert x509.load_pem_x509_crl(response.content) == x509.load_der_x509_crl(der)


def test_the_ca_certificate_is_served_in_der_as_application_pkix_cert(
    client: Client, ca: CertificateAuthority
) -> None:
    response = client.get(url("ca:cert-der", ca))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-cert"
    assert response.content == bytes(ca.certificate_der)


def test_the_ca_certificate_is_served_in_pem(client: Client, ca: CertificateAuthority) -> None:
    response = client.get(url("ca:cert-pem", ca))

    assert response.status_code == 200
    assert response.content.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificate(response.content) == ca.certificate


def test_the_crl_lists_a_revocation_as_soon_as_it_is_committed(
    client: Client,
    ca: CertificateAuthority,
    issue_for: Callable[..., Certificate],
    alice: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    certificate = issue_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)

    crl = x509.load_der_x509_crl(client.get(url("ca:crl-der", ca)).content)

    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_int) is not None


@pytest.mark.parametrize("name", ENDPOINTS)
def test_no_login_is_needed_and_head_works(client: Client, ca: CertificateAuthority, name: str) -> None:
    response = client.head(url(name, ca))

    assert response.status_code == 200
    assert response["ETag"]


# --- caching -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_response_has_an_etag_and_last_modified(
    client: Client, ca: CertificateAuthority, name: str
) -> None:
    response = client.get(url(name, ca))

    assert re.fullmatch(r'"[0-9a-f]{64}(-pem)?"', response["ETag"])
    assert response["Last-Modified"].endswith(" GMT")
    assert "public" in response["Cache-Control"]


def test_the_der_and_pem_crl_have_different_etags(client: Client, ca: CertificateAuthority) -> None:
    assert client.get(url("ca:crl-der", ca))["ETag"] != client.get(url("ca:crl-pem", ca))["ETag"]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_if_none_match_with_the_etag_gives_304(client: Client, ca: CertificateAuthority, name: str) -> None:
    first = client.get(url(name, ca))

    again = client.get(url(name, ca), HTTP_IF_NONE_MATCH=first["ETag"])

    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == first["ETag"]
    assert "max-age" in again["Cache-Control"]


#: Preconditions (RFC 9110 section 13.2.2) built from the first answer's ETag (E) and Last-Modified (LM).
PRECONDITIONS = [
    pytest.param({"If-None-Match": "E"}, 304, id="none-match-exact"),
    pytest.param({"If-None-Match": "W/E"}, 304, id="none-match-weak"),
    pytest.param({"If-None-Match": '"0000", E'}, 304, id="none-match-in-a-list"),
    pytest.param({"If-None-Match": "*"}, 304, id="none-match-star"),
    pytest.param({"If-None-Match": '"0000"', "If-Modified-Since": "LM"}, 200, id="none-match-wins"),
    pytest.param({"If-Match": '"0000"', "If-None-Match": "E"}, 412, id="if-match-fails-first"),
    pytest.param({"If-Match": "E", "If-None-Match": "E"}, 304, id="if-match-passes"),
    pytest.param(
        {"If-Unmodified-Since": "OLD", "If-None-Match": "E"}, 412, id="unmodified-since-fails-first"
    ),
    pytest.param({"If-Modified-Since": "LM"}, 304, id="modified-since"),
]


@pytest.mark.parametrize(("headers", "status"), PRECONDITIONS)
@pytest.mark.parametrize("name", ENDPOINTS)
def test_conditional_requests_follow_rfc_9110(
    client: Client, ca: CertificateAuthority, name: str, headers: dict[str, str], status: int
) -> None:
    first = client.get(url(name, ca))
    old = http_date((ca.not_before - dt.timedelta(days=1)).timestamp())  # before any Last-Modified here
    values = {"E": first["ETag"], "LM": first["Last-Modified"], "OLD": old}
    sent = {
        key: re.sub(r"\b(E|LM|OLD)\b", lambda m: values[str(m.group(1))], value)
        for key, value in headers.items()
    }

    again = client.get(url(name, ca), headers=sent)

    assert again.status_code == status
    if status == 304:
        assert again.content == b""
        assert again["ETag"] == first["ETag"]
        assert again["Last-Modified"] == first["Last-Modified"]
        assert again["Cache-Control"] == first["Cache-Control"]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_if_none_match_with_another_etag_gives_the_body(
    client: Client, ca: CertificateAuthority, name: str
) -> None:
    response = client.get(url(name, ca), HTTP_IF_NONE_MATCH='"0000"')

    assert response.status_code == 200
    assert response.content


@pytest.mark.parametrize("name", ENDPOINTS)
def test_if_modified_since_last_modified_gives_304(
    client: Client, ca: CertificateAuthority, name: str
) -> None:
    first = client.get(url(name, ca))

    again = client.get(url(name, ca), HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])

    assert again.status_code == 304
    assert again.content == b""


def test_if_modified_since_before_the_crl_gives_the_crl(
    client: Client, frozen_ca: CertificateAuthority
) -> None:
    response = client.get(
        url("ca:crl-der", frozen_ca),
        HTTP_IF_MODIFIED_SINCE=http_date((T0 - dt.timedelta(hours=1)).timestamp()),
    )

    assert response.status_code == 200
    assert response["Last-Modified"] == http_date(T0.timestamp())


def test_a_re_signed_crl_is_not_answered_with_304(
    client: Client, frozen: time_machine.Traveller, frozen_ca: CertificateAuthority
) -> None:
    first = client.get(url("ca:crl-der", frozen_ca))
    frozen.shift(crl_lifetime() / 2)

    again = client.get(url("ca:crl-der", frozen_ca), HTTP_IF_NONE_MATCH=first["ETag"])

    assert again.status_code == 200
    assert again["ETag"] != first["ETag"]
    assert x509.load_der_x509_crl(again.content).last_update_utc == T0 + crl_lifetime() / 2


def test_cache_control_never_exceeds_the_configured_max_age(
    client: Client, frozen_ca: CertificateAuthority, settings: Settings
) -> None:
    response = client.get(url("ca:crl-der", frozen_ca))
    assert max_age(response["Cache-Control"]) == settings.ENROLL_CRL_MAX_AGE

    settings.ENROLL_CRL_MAX_AGE = 7
    assert max_age(client.get(url("ca:crl-pem", frozen_ca))["Cache-Control"]) == 7


def test_cache_control_never_reaches_past_next_update(
    client: Client, frozen: time_machine.Traveller, frozen_ca: CertificateAuthority, settings: Settings
) -> None:
    publication = CrlPublication.objects.filter(ca=frozen_ca).latest()
    key_path(frozen_ca).unlink()  # it cannot be re-signed, so the old one is served until nextUpdate
    frozen.move_to(publication.next_update - dt.timedelta(seconds=20))

    response = client.get(url("ca:crl-der", frozen_ca))

    assert response.status_code == 200
    assert response.content == bytes(publication.der)
    assert max_age(response["Cache-Control"]) <= 20 < settings.ENROLL_CRL_MAX_AGE


# --- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENDPOINTS)
def test_an_unknown_slug_is_404(client: Client, ca: CertificateAuthority, name: str) -> None:
    assert client.get(url(name, "no-such-ca")).status_code == 404


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_only_get_and_head_are_allowed(
    client: Client, ca: CertificateAuthority, name: str, method: str
) -> None:
    response = getattr(client, method)(url(name, ca))

    assert response.status_code == 405
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize("name", ["ca:crl-der", "ca:crl-pem"])
@pytest.mark.parametrize("breakage", ["key-file-deleted", "wrong-passphrase"])
def test_an_expired_crl_that_cannot_be_re_signed_gives_503_not_the_expired_crl(
    client: Client,
    frozen: time_machine.Traveller,
    frozen_ca: CertificateAuthority,
    settings: Settings,
    name: str,
    breakage: str,
) -> None:
    publication = CrlPublication.objects.filter(ca=frozen_ca).latest()
    if breakage == "key-file-deleted":
        key_path(frozen_ca).unlink()
    else:
        clear_key_cache()
        settings.ENROLL_CA_PASSPHRASE = "the-wrong-passphrase-here"
    frozen.move_to(publication.next_update)

    response = client.get(url(name, frozen_ca))

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert b"publish_crl" in response.content
    assert b"-----BEGIN" not in response.content
    assert bytes(publication.der) not in response.content
    assert "ETag" not in response
    assert response["Retry-After"]


def test_the_ca_certificate_is_still_served_when_the_key_is_gone(
    client: Client, ca: CertificateAuthority
) -> None:
    key_path(ca).unlink()

    assert client.get(url("ca:cert-der", ca)).status_code == 200


# --- the URLs written into certificates ---------------------------------------------------------------


def test_the_crl_and_ca_urls_in_a_certificate_are_these_endpoints(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    settings: Settings,
) -> None:
    cert = issue_for(alice).x509

    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    [crl_uri] = crl_dp[0].full_name
    [ca_issuers] = [
        d
        for d in cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    crl_url, ca_url = urlsplit(crl_uri.value), urlsplit(ca_issuers.access_location.value)
    base = urlsplit(settings.ENROLL_PUBLIC_URL)
    assert (crl_url.scheme, crl_url.netloc) == (ca_url.scheme, ca_url.netloc) == (base.scheme, base.netloc)
    assert crl_url.path == url("ca:crl-der", ca)
    assert ca_url.path == url("ca:cert-der", ca)

    crl_response = client.get(crl_url.path)
    ca_response = client.get(ca_url.path)

    assert crl_response["Content-Type"] == "application/pkix-crl"
    assert x509.load_der_x509_crl(crl_response.content).issuer == cert.issuer
    assert ca_response["Content-Type"] == "application/pkix-cert"
    cert.verify_directly_issued_by(x509.load_der_x509_certificate(ca_response.content))


@pytest.mark.parametrize("name", ENDPOINTS)
def test_downloads_are_answered_before_sessions_and_logins_with_the_security_headers(
    client: Client, ca: CertificateAuthority, name: str, settings: Settings
) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    response = client.get(url(name, ca), secure=True)

    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" in response  # SecurityMiddleware still runs first
    assert not hasattr(response.wsgi_request, "session")
    assert not hasattr(response.wsgi_request, "user")
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "Cookie" not in response.get("Vary", "")
    assert not response.cookies
    assert response.wsgi_request.resolver_match is not None
    assert response.wsgi_request.resolver_match.url_name == name.split(":")[1]


@pytest.mark.parametrize(
    "path", ["/pki/health.json", "/pki/no-such-ca.crl", "/pki/no-such-ca.crt", "/pki/x/y.crl"]
)
def test_other_pki_urls_and_unknown_cas_go_through_the_whole_chain(
    client: Client, ca: CertificateAuthority, path: str
) -> None:
    response = client.get(path)

    assert response.status_code in (200, 404)
    assert hasattr(response.wsgi_request, "session")
    assert hasattr(response.wsgi_request, "user")
