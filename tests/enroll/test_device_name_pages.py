"""Device names in the portal: chosen on every submission page, shown wherever a request or certificate is,
changed by the owner on the request and certificate pages, and part of the download file names."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority
from enroll import flows
from enroll.models import EnrollmentRequest
from tests.conftest import make_csr
from tests.spkac_tools import build_spkac

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]

BAD_NAMES = [
    pytest.param("x" * 65, "at most 64 characters; this one has 65", id="too-long"),
    pytest.param("laptop\r\nSet-Cookie: x", "control character", id="line-break"),
    pytest.param("phone\u202egnp.exe", "text-direction override", id="bidi-override"),
    pytest.param("a\x00b", "control character", id="nul"),
]


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def named_certificate(user: User, name: str = "Work laptop") -> Certificate:
    request = flows.submit_csr(owner=user, data=make_csr(), device_name=name)
    decided = flows.approve(request_id=request.pk)
    assert decided.certificate is not None, decided.reason
    return decided.certificate


# --- choosing it at submission -------------------------------------------------------------------------


def test_the_new_request_page_offers_the_device_name_field(client: Client, alice: User) -> None:
    body = logged_in(client, alice).get(reverse("portal:request-new")).content.decode()

    assert 'name="device_name"' in body
    assert 'maxlength="64"' in body
    assert "not written into the certificate" in body


def test_a_pasted_csr_is_stored_with_its_device_name(client: Client, alice: User) -> None:
    response = logged_in(client, alice).post(
        reverse("portal:request-new"), {"csr_text": make_csr().decode(), "device_name": "  Work laptop "}
    )

    assert response.status_code == 302
    assert EnrollmentRequest.objects.get().device_name == "Work laptop"


def test_an_uploaded_csr_is_stored_with_its_device_name(client: Client, alice: User) -> None:
    upload = SimpleUploadedFile("me.csr", make_csr(), content_type="application/pkcs10")
    response = logged_in(client, alice).post(
        reverse("portal:request-new"), {"csr_file": upload, "device_name": "Büro-PC"}
    )

    assert response.status_code == 302
    assert EnrollmentRequest.objects.get().device_name == "Büro-PC"


@pytest.mark.parametrize(("bad_name", "words"), BAD_NAMES)
def test_a_bad_device_name_is_refused_inline_and_the_csr_stays_in_the_form(
    client: Client, alice: User, bad_name: str, words: str
) -> None:
    csr = make_csr().decode()

    response = logged_in(client, alice).post(
        reverse("portal:request-new"), {"csr_text": csr, "device_name": bad_name}
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert words in body
    assert csr.splitlines()[1] in body, "the pasted CSR is kept, so only the name needs fixing"
    assert not EnrollmentRequest.objects.exists()


def test_an_spkac_is_stored_with_its_device_name(client: Client, alice: User) -> None:
    logged_in(client, alice)
    page = client.get(reverse("portal:request-spkac")).content.decode()
    found = re.search(r'id="spkac-challenge">([0-9a-f]{40})<', page)
    assert found is not None
    assert 'name="device_name"' in page
    line = build_spkac(ec.generate_private_key(ec.SECP256R1()), found.group(1), algorithm="sha256_ecdsa")

    response = client.post(
        reverse("portal:request-spkac"), {"spkac_text": line, "device_name": "Old Firefox"}
    )

    assert response.status_code == 302
    assert EnrollmentRequest.objects.get().device_name == "Old Firefox"


def test_a_bad_device_name_on_the_spkac_page_is_refused_inline(client: Client, alice: User) -> None:
    response = logged_in(client, alice).post(
        reverse("portal:request-spkac"), {"spkac_text": "SPKAC=AAAA", "device_name": "a\u2028b"}
    )

    assert response.status_code == 200
    assert "line break" in response.content.decode()
    assert not EnrollmentRequest.objects.exists()


def test_the_keygen_page_offers_the_device_name_field(client: Client, alice: User) -> None:
    body = logged_in(client, alice).get(reverse("portal:keygen")).content.decode()

    assert 'id="keygen-device-name"' in body
    assert 'maxlength="64"' in body


def test_the_in_browser_keygen_submission_takes_a_device_name(client: Client, alice: User) -> None:
    response = logged_in(client, alice).post(
        reverse("portal:keygen-submit"), {"csr": make_csr().decode(), "device_name": " Phone "}
    )

    assert response.status_code == 200
    assert EnrollmentRequest.objects.get(pk=response.json()["request_id"]).device_name == "Phone"


@pytest.mark.parametrize(("bad_name", "words"), BAD_NAMES)
def test_the_in_browser_keygen_submission_refuses_a_bad_device_name_in_json(
    client: Client, alice: User, bad_name: str, words: str
) -> None:
    response = logged_in(client, alice).post(
        reverse("portal:keygen-submit"), {"csr": make_csr().decode(), "device_name": bad_name}
    )

    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert words in response.json()["error"]
    assert not EnrollmentRequest.objects.exists()


# --- renewal ---------------------------------------------------------------------------------------------


def test_the_renew_form_starts_with_the_certificate_device_name(
    client: Client, ca: CertificateAuthority, alice: User
) -> None:
    certificate = named_certificate(alice)

    body = logged_in(client, alice).get(reverse("portal:certificate-renew", args=[certificate.pk])).content
    assert 'name="device_name" value="Work laptop"' in body.decode()


@pytest.mark.parametrize(
    ("posted", "stored"),
    [({}, "Work laptop"), ({"device_name": "New laptop"}, "New laptop"), ({"device_name": ""}, "")],
    ids=["field-absent-keeps", "renamed", "emptied"],
)
def test_a_renewal_from_the_portal_keeps_or_changes_the_device_name(
    client: Client, ca: CertificateAuthority, alice: User, posted: dict[str, str], stored: str
) -> None:
    certificate = named_certificate(alice)

    logged_in(client, alice).post(
        reverse("portal:certificate-renew", args=[certificate.pk]),
        {"csr_text": make_csr().decode(), **posted},
    )

    assert EnrollmentRequest.objects.get(renewal_of=certificate).device_name == stored


# --- shown ---------------------------------------------------------------------------------------------


def test_the_dashboard_shows_the_device_names_of_certificates_and_requests(
    client: Client, ca: CertificateAuthority, alice: User
) -> None:
    named_certificate(alice, "Work laptop")
    flows.submit_csr(owner=alice, data=make_csr(), device_name="Tablet")

    body = logged_in(client, alice).get(reverse("portal:dashboard")).content.decode()

    assert body.count("<bdi>Work laptop</bdi>") == 2, "the certificate and the request it came from"
    assert "<bdi>Tablet</bdi>" in body


@pytest.mark.parametrize(
    "page", ["portal:certificate-detail", "portal:certificate-renew", "portal:certificate-revoke"]
)
def test_the_certificate_pages_show_the_device_name(
    client: Client, ca: CertificateAuthority, alice: User, page: str
) -> None:
    certificate = named_certificate(alice, "Work laptop")

    body = logged_in(client, alice).get(reverse(page, args=[certificate.pk])).content.decode()

    assert "<bdi>Work laptop</bdi>" in body


def test_the_request_page_shows_the_device_name(client: Client, alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name="Tablet")

    body = logged_in(client, alice).get(reverse("portal:request-detail", args=[request.pk])).content.decode()

    assert "<bdi>Tablet</bdi>" in body


def test_a_device_name_that_looks_like_html_is_shown_as_text(client: Client, alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name='<script>alert("x")</script>')

    body = logged_in(client, alice).get(reverse("portal:request-detail", args=[request.pk])).content.decode()

    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


# --- changed by the owner ----------------------------------------------------------------------------------


def test_the_owner_renames_on_the_certificate_page(
    client: Client, ca: CertificateAuthority, alice: User
) -> None:
    certificate = named_certificate(alice)
    logged_in(client, alice)
    detail = reverse("portal:certificate-detail", args=[certificate.pk])
    assert reverse("portal:certificate-device", args=[certificate.pk]) in client.get(detail).content.decode()

    response = client.post(
        reverse("portal:certificate-device", args=[certificate.pk]), {"device_name": " Home PC "}, follow=True
    )

    assert response.redirect_chain == [(detail, 302)]
    assert "Device name saved: Home PC." in response.content.decode()
    assert Certificate.objects.get(pk=certificate.pk).device_name == "Home PC"
    assert EnrollmentRequest.objects.get(certificate=certificate).device_name == "Home PC"
    assert AuditEntry.objects.filter(event=AuditEvent.DEVICE_RENAMED, actor=alice).count() == 1


def test_the_owner_renames_on_the_request_page(client: Client, alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name="Tablet")
    logged_in(client, alice)

    response = client.post(
        reverse("portal:request-device", args=[request.pk]), {"device_name": ""}, follow=True
    )

    assert "Device name removed." in response.content.decode()
    assert EnrollmentRequest.objects.get(pk=request.pk).device_name == ""


@pytest.mark.parametrize(("bad_name", "words"), BAD_NAMES)
def test_a_bad_new_name_is_refused_on_the_page_and_nothing_changes(
    client: Client, ca: CertificateAuthority, alice: User, bad_name: str, words: str
) -> None:
    certificate = named_certificate(alice)

    response = logged_in(client, alice).post(
        reverse("portal:certificate-device", args=[certificate.pk]), {"device_name": bad_name}
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert words in body
    assert "is-invalid" in body
    assert Certificate.objects.get(pk=certificate.pk).device_name == "Work laptop"


def test_nobody_else_can_rename_and_staff_see_no_form(
    client: Client, ca: CertificateAuthority, alice: User, bob: User, admin_user: User
) -> None:
    certificate = named_certificate(alice)
    request = EnrollmentRequest.objects.get(certificate=certificate)

    for other in (bob, admin_user):
        logged_in(client, other)
        cert_post = client.post(
            reverse("portal:certificate-device", args=[certificate.pk]), {"device_name": "x"}
        )
        request_post = client.post(reverse("portal:request-device", args=[request.pk]), {"device_name": "x"})
        assert (cert_post.status_code, request_post.status_code) == (404, 404)

    staff_view = client.get(reverse("portal:certificate-detail", args=[certificate.pk])).content.decode()
    assert "<bdi>Work laptop</bdi>" in staff_view, "staff may view the name"
    assert reverse("portal:certificate-device", args=[certificate.pk]) not in staff_view
    assert Certificate.objects.get(pk=certificate.pk).device_name == "Work laptop"
    assert not AuditEntry.objects.filter(event=AuditEvent.DEVICE_RENAMED).exists()


def test_renaming_is_post_only(client: Client, ca: CertificateAuthority, alice: User) -> None:
    certificate = named_certificate(alice)

    response = logged_in(client, alice).get(reverse("portal:certificate-device", args=[certificate.pk]))

    assert response.status_code == 405


# --- download file names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Work laptop", "alice-work-laptop-"),
        ("Büro-PC (Zimmer 3)", "alice-buro-pc-zimmer-3-"),
        ("ノートパソコン", "alice-"),
        ("", "alice-"),
    ],
)
def test_the_download_file_name_carries_the_slugified_device_name(
    client: Client, ca: CertificateAuthority, alice: User, name: str, stem: str
) -> None:
    certificate = named_certificate(alice, name)

    response = logged_in(client, alice).get(
        reverse("portal:certificate-download", args=[certificate.pk, "pem"])
    )

    assert f'filename="{stem}{certificate.serial[:8].lower()}.pem"' in response["Content-Disposition"]


def test_the_dashboard_next_steps_name_the_device(
    client: Client, ca: CertificateAuthority, alice: User
) -> None:
    certificate = named_certificate(alice, "Work laptop")
    request = EnrollmentRequest.objects.get(certificate=certificate)

    body = logged_in(client, alice).get(reverse("portal:dashboard")).content.decode()

    assert f"Your certificate for Work laptop (from request #{request.pk}) is ready" in body
