"""The SPKAC page (portal:request-spkac) with the Django test client; the x-x509-user-cert download."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
import time_machine
from cryptography import x509
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from ca.models import CertificateAuthority
from enroll import challenges, flows
from enroll.models import EnrollmentRequest, RequestKind, SpkacChallenge
from tests.conftest import make_csr
from tests.spkac_tools import key_file, spkac

pytestmark = [pytest.mark.django_db, pytest.mark.real_client]

URL = "/requests/spkac/"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shown_challenge(client: Client) -> str:
    """Open the page; return the challenge it shows (and check it is in the keygen element and command)."""
    response = client.get(reverse("portal:request-spkac"))
    assert response.status_code == 200
    body = response.content.decode()
    found = re.search(r'id="spkac-challenge">([0-9a-f]{40})<', body)
    assert found is not None, body
    value = found.group(1)
    assert f'<keygen name="spkac" challenge="{value}" keytype="rsa">' in body
    assert f"openssl spkac -key alice.key -challenge {value} -digest sha256" in body
    return value


def post(client: Client, data: dict[str, str]) -> str:
    response = client.post(reverse("portal:request-spkac"), data)
    assert response.status_code == 200, "a refusal re-renders the page"
    return response.content.decode()


def test_the_page_is_at_requests_spkac_and_needs_a_login(client: Client) -> None:
    assert reverse("portal:request-spkac") == URL

    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


def test_the_page_shows_a_fresh_challenge_bound_to_the_session_each_time(alice: User) -> None:
    client = logged_in(alice)

    first = shown_challenge(client)
    second = shown_challenge(client)

    assert first != second
    rows = SpkacChallenge.objects.filter(owner=alice)
    assert {row.value for row in rows} == {first, second}
    assert {row.binding for row in rows} == {client.session[challenges.SESSION_BINDING_KEY]}


def test_the_new_request_page_links_to_the_spkac_page(alice: User) -> None:
    body = logged_in(alice).get(reverse("portal:request-new")).content.decode()

    assert f'href="{URL}"' in body


def test_a_pasted_spkac_with_prefix_and_line_breaks_becomes_a_request(alice: User) -> None:
    client = logged_in(alice)
    line = spkac(key_file("rsa2048"), shown_challenge(client))
    wrapped = "\r\n".join(line[i : i + 64] for i in range(0, len(line), 64))

    response = client.post(URL, {"spkac_text": wrapped})

    request = EnrollmentRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:request-detail", args=[request.pk])
    assert request.kind == RequestKind.SPKAC
    assert request.owner == alice
    detail = client.get(response["Location"]).content.decode()
    assert "SPKAC" in detail
    assert "RSA 2048" in detail


def test_a_legacy_browser_posting_the_keygen_field_works(alice: User) -> None:
    client = logged_in(alice)
    body = spkac(key_file("ec-p256"), shown_challenge(client)).removeprefix("SPKAC=")

    response = client.post(URL, {"spkac": body})

    assert response.status_code == 302
    assert EnrollmentRequest.objects.get().key_description == "ECDSA P-256"


def test_an_md5_spkac_is_refused_inline_naming_the_fix(alice: User) -> None:
    client = logged_in(alice)

    body = post(client, {"spkac_text": spkac(key_file("rsa2048"), shown_challenge(client), digest=None)})

    assert "signed with MD5" in body
    assert "-digest sha256" in body
    assert not EnrollmentRequest.objects.exists()


def test_an_md5_spkac_is_accepted_with_the_legacy_setting(alice: User, settings: Settings) -> None:
    settings.ENROLL_SPKAC_ALLOW_MD5 = True
    client = logged_in(alice)

    response = client.post(
        URL, {"spkac_text": spkac(key_file("rsa2048"), shown_challenge(client), digest=None)}
    )

    assert response.status_code == 302


def test_a_tampered_spkac_is_refused_inline(alice: User) -> None:
    client = logged_in(alice)
    der = bytearray(base64.b64decode(spkac(key_file("ec-p256"), shown_challenge(client))[6:]))
    der[-1] ^= 0x01  # the signature's last byte

    body = post(client, {"spkac_text": "SPKAC=" + base64.b64encode(bytes(der)).decode()})

    assert "does not match its public key and challenge" in body
    assert not EnrollmentRequest.objects.exists()


def test_a_wrong_challenge_is_refused_inline(alice: User) -> None:
    client = logged_in(alice)
    shown_challenge(client)

    body = post(client, {"spkac_text": spkac(key_file("ec-p256"), "f" * 40)})

    assert "not given to you" in body


def test_a_challenge_shown_to_another_session_is_refused_inline(alice: User) -> None:
    laptop, phone = logged_in(alice), logged_in(alice)
    line = spkac(key_file("ec-p256"), shown_challenge(laptop))

    body = post(phone, {"spkac_text": line})

    assert "another session" in body
    assert not EnrollmentRequest.objects.exists()
    assert laptop.post(URL, {"spkac_text": line}).status_code == 302, "the session it was shown to may use it"


def test_an_expired_challenge_is_refused_inline(alice: User) -> None:
    start = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False):
        client = logged_in(alice)  # the session must be fresh at the travelled-to time
        line = spkac(key_file("ec-p256"), shown_challenge(client))

    with time_machine.travel(start + dt.timedelta(minutes=31), tick=False):
        body = post(client, {"spkac_text": line})

    assert "expired" in body
    assert not EnrollmentRequest.objects.exists()


def test_a_replayed_spkac_is_refused_inline(alice: User) -> None:
    client = logged_in(alice)
    line = spkac(key_file("ec-p256"), shown_challenge(client))
    assert client.post(URL, {"spkac_text": line}).status_code == 302

    body = post(client, {"spkac_text": line})

    assert "used already" in body
    assert EnrollmentRequest.objects.count() == 1


def test_an_empty_post_is_refused_inline(alice: User) -> None:
    body = post(logged_in(alice), {"spkac_text": "  "})

    assert "Nothing was submitted" in body


def test_a_pasted_private_key_is_refused_and_not_shown_again(alice: User) -> None:
    pem = key_file("ec-p256").read_text()

    body = post(logged_in(alice), {"spkac_text": pem})

    assert "This is a private key" in body
    assert pem.splitlines()[1][:20] not in body


def test_an_unverified_user_sees_what_to_do_and_gets_no_challenge(db: None) -> None:
    carol = User.objects.create_user("carol", "carol@example.com", "carol-password-123")
    client = logged_in(carol)

    body = client.get(URL).content.decode()
    posted = post(client, {"spkac_text": "SPKAC=AAAA"})

    assert "Verify your e-mail address first" in body
    assert "<keygen" not in body
    assert "Verify your e-mail address first" in posted
    assert not SpkacChallenge.objects.exists()


# --- the legacy download ------------------------------------------------------------------------------


def issued_spkac_certificate(client: Client, user: User) -> int:
    client_line = spkac(key_file("ec-p256"), shown_challenge(client))
    assert client.post(URL, {"spkac_text": client_line}).status_code == 302
    approved = flows.approve(request_id=EnrollmentRequest.objects.get(owner=user).pk)
    assert approved.certificate is not None, approved.reason
    return approved.certificate.pk


def test_an_spkac_certificate_is_served_as_x_x509_user_cert_inline(
    alice: User, ca: CertificateAuthority
) -> None:
    client = logged_in(alice)
    pk = issued_spkac_certificate(client, alice)
    url = reverse("portal:certificate-download", args=[pk, "x509-user-cert"])

    page = client.get(reverse("portal:certificate-detail", args=[pk])).content.decode()
    response = client.get(url)

    assert url in page
    assert "application/x-x509-user-cert" in page
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-x509-user-cert"
    assert response["Content-Disposition"].startswith("inline")
    cert = x509.load_der_x509_certificate(response.content)
    assert cert.subject.rfc4514_string() == "CN=alice,O=Enroll Portal"


def test_the_legacy_download_is_not_offered_for_a_csr_certificate(
    alice: User, ca: CertificateAuthority
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    certificate = flows.approve(request_id=request.pk).certificate
    assert certificate is not None

    page = logged_in(alice).get(reverse("portal:certificate-detail", args=[certificate.pk])).content.decode()

    assert "x509-user-cert" not in page


def test_nobody_else_downloads_an_spkac_certificate(alice: User, bob: User, ca: CertificateAuthority) -> None:
    pk = issued_spkac_certificate(logged_in(alice), alice)

    response = logged_in(bob).get(reverse("portal:certificate-download", args=[pk, "x509-user-cert"]))

    assert response.status_code == 404
