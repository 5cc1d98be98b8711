"""The end-user pages: access rules (login, ownership, CSRF), submitting a CSR, request and certificate pages,
downloads and the help page."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.pki.csr import MAX_SUBMISSION_BYTES
from ca.services.export import EXPORT_FORMATS
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.forms import CsrForm
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import fixture_bytes, make_csr

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def certificate_urls(certificate: Certificate) -> list[str]:
    pk = certificate.pk
    return [
        reverse("portal:certificate-detail", args=[pk]),
        *(reverse("portal:certificate-download", args=[pk, fmt]) for fmt in EXPORT_FORMATS),
        reverse("portal:certificate-revoke", args=[pk]),
        reverse("portal:certificate-renew", args=[pk]),
    ]


# --- login and ownership --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("portal:dashboard", []),
        ("portal:request-new", []),
        ("portal:request-detail", [1]),
        ("portal:certificate-detail", [1]),
        ("portal:certificate-download", [1, "pem"]),
        ("portal:certificate-revoke", [1]),
        ("portal:certificate-renew", [1]),
    ],
)
def test_every_user_page_needs_a_login(client: Client, name: str, args: list[object]) -> None:
    url = reverse(name, args=args)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert "next=" in response["Location"]


def test_the_help_page_is_public(client: Client, ca: CertificateAuthority) -> None:
    response = client.get(reverse("portal:help"))

    assert response.status_code == 200
    body = response.content.decode()
    assert ca.public_url("ca:cert-pem") in body
    assert ca.public_url("ca:crl-pem") in body
    assert "http://pki.example.test/pki/test-root.crl.pem" in body
    assert "ec_paramgen_curve:P-256" in body
    assert "keytool -certreq" in body


def test_bob_gets_404_on_alices_request_certificate_downloads_revoke_and_renew(
    client: Client, ca: CertificateAuthority, alice: User, bob: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    pending = flows.submit_csr(owner=alice, data=make_csr())
    logged_in(client, bob)

    urls = [
        *certificate_urls(certificate),
        reverse("portal:request-detail", args=[pending.pk]),
        reverse("portal:request-detail", args=[certificate.enrollment_request.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
    for url in [
        reverse("portal:certificate-revoke", args=[certificate.pk]),
        reverse("portal:certificate-renew", args=[certificate.pk]),
    ]:
        response = client.post(url, {"reason": "cessation_of_operation", "confirm": "on", "csr_text": "x"})
        assert response.status_code == 404, url

    assert not hasattr(Certificate.objects.get(pk=certificate.pk), "revocation")
    assert EnrollmentRequest.objects.count() == 2


def test_the_dashboard_lists_only_ones_own_things(
    client: Client, ca: CertificateAuthority, alice: User, bob: User, issue_for: IssueFor
) -> None:
    alices = issue_for(alice)
    bobs = issue_for(bob)

    body = logged_in(client, bob).get(reverse("portal:dashboard")).content.decode()

    assert bobs.serial[:17] in body
    assert alices.serial[:17] not in body
    assert reverse("portal:certificate-detail", args=[alices.pk]) not in body


def test_staff_with_view_permission_may_view_and_download_but_not_revoke_or_renew(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    helpdesk = User.objects.create_user("helpdesk", "helpdesk@example.com", "helpdesk-password-123")
    helpdesk.is_staff = True
    helpdesk.save()
    logged_in(client, helpdesk)
    detail = reverse("portal:certificate-detail", args=[certificate.pk])
    assert client.get(detail).status_code == 404, "staff without the permission see nothing"

    helpdesk.user_permissions.add(
        Permission.objects.get(codename="view_certificate"),
        Permission.objects.get(codename="view_enrollmentrequest"),
    )
    response = client.get(detail)

    assert response.status_code == 200
    assert "as staff" in response.content.decode()
    assert reverse("portal:certificate-revoke", args=[certificate.pk]) not in response.content.decode()
    assert client.get(reverse("portal:certificate-download", args=[certificate.pk, "pem"])).status_code == 200
    request_url = reverse("portal:request-detail", args=[certificate.enrollment_request.pk])
    assert client.get(request_url).status_code == 200
    assert client.get(reverse("portal:certificate-revoke", args=[certificate.pk])).status_code == 404
    assert client.get(reverse("portal:certificate-renew", args=[certificate.pk])).status_code == 404


@pytest.mark.parametrize("pk", ["0", "99999", "99999999999999999999999999"])
def test_unknown_or_absurd_ids_are_404_not_500(client: Client, alice: User, pk: str) -> None:
    logged_in(client, alice)

    for path in [
        f"/requests/{pk}/",
        f"/certificates/{pk}/",
        f"/certificates/{pk}/download/pem/",
        f"/certificates/{pk}/revoke/",
        f"/certificates/{pk}/renew/",
    ]:
        assert client.get(path).status_code == 404, path


def test_an_unknown_download_format_is_404(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)

    response = logged_in(client, alice).get(f"/certificates/{certificate.pk}/download/pkcs12/")

    assert response.status_code == 404


# --- CSRF -----------------------------------------------------------------------------------------


def test_every_state_change_needs_the_csrf_token(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    csr = make_csr().decode()

    posts = [
        (reverse("portal:request-new"), {"csr_text": csr}),
        (reverse("portal:certificate-renew", args=[certificate.pk]), {"csr_text": csr}),
        (
            reverse("portal:certificate-revoke", args=[certificate.pk]),
            {"reason": "superseded", "confirm": "on"},
        ),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url

    assert EnrollmentRequest.objects.count() == 1
    assert not hasattr(Certificate.objects.get(pk=certificate.pk), "revocation")


def test_with_the_csrf_token_the_submission_goes_through(ca: CertificateAuthority, alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get(reverse("portal:request-new"))
    token = page.cookies["csrftoken"].value

    response = client.post(
        reverse("portal:request-new"), {"csr_text": make_csr().decode(), "csrfmiddlewaretoken": token}
    )

    assert response.status_code == 302
    assert EnrollmentRequest.objects.filter(owner=alice).count() == 1


@pytest.mark.parametrize("name", ["portal:dashboard", "portal:request-detail", "portal:certificate-detail"])
def test_read_only_pages_refuse_posts(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor, name: str
) -> None:
    certificate = issue_for(alice)
    pk = certificate.pk if name == "portal:certificate-detail" else certificate.enrollment_request.pk
    url = reverse(name, args=[] if name == "portal:dashboard" else [pk])

    assert logged_in(client, alice).post(url).status_code == 405


# --- submitting a request -------------------------------------------------------------------------


def test_the_new_request_page_shows_the_commands_and_why_no_private_key(client: Client, alice: User) -> None:
    body = logged_in(client, alice).get(reverse("portal:request-new")).content.decode()

    assert (
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\\n"
        "  -keyout alice.key -out alice.csr" in body
    )
    assert "keytool -genkeypair -alias alice -keyalg EC -groupname secp256r1" in body
    assert "keytool -certreq -alias alice" in body
    assert "never wants your private key" in body
    assert 'name="csr_text"' in body
    assert 'name="csr_file"' in body
    assert 'for="id_csr_text"' in body
    assert 'for="id_csr_file"' in body
    assert 'enctype="multipart/form-data"' in body


def test_a_pasted_csr_is_stored_and_the_user_lands_on_the_request_page(client: Client, alice: User) -> None:
    pem = make_csr(common_name="ignored name")

    response = logged_in(client, alice).post(reverse("portal:request-new"), {"csr_text": pem.decode()})

    request = EnrollmentRequest.objects.get(owner=alice)
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:request-detail", args=[request.pk])
    assert request.status == RequestStatus.SUBMITTED
    assert bytes(request.request_der) == x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    page = client.get(response["Location"]).content.decode()
    assert "was submitted" in page
    assert "CN=ignored name" in page
    assert "ignored" in page
    assert request.spki_sha256 in page
    assert "Waiting for an administrator" in page


@pytest.mark.parametrize(
    "name", ["openssl-rsa2048.csr.der", "openssl-ec-p256.csr.pem", "keytool-ec-p256.csr.pem"]
)
def test_an_uploaded_csr_in_pem_or_der_is_stored(client: Client, alice: User, name: str) -> None:
    upload = SimpleUploadedFile(name, fixture_bytes(name), content_type="application/octet-stream")

    response = logged_in(client, alice).post(reverse("portal:request-new"), {"csr_file": upload})

    assert response.status_code == 302
    assert EnrollmentRequest.objects.filter(owner=alice).count() == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openssl-rsa1024.csr.pem", "1024"),
        ("openssl-ec-secp256k1.csr.pem", "curve"),
        ("openssl-ed25519.csr.pem", "Ed25519"),
        ("openssl-rsa2048-sha1.csr.pem", "signed with SHA1"),
        ("tampered-signature.csr.pem", "signature does not match"),
        ("selfsigned-cert.pem", "certificate, not a certificate request"),
        ("crafted-rsa2048-smallfactor.csr.pem", "factor"),
    ],
)
def test_each_refusal_is_shown_inline_and_nothing_is_stored(
    client: Client, alice: User, name: str, expected: str
) -> None:
    response = logged_in(client, alice).post(
        reverse("portal:request-new"), {"csr_text": fixture_bytes(name).decode()}
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert "is-invalid" in body
    assert expected.lower() in body.lower()
    assert not EnrollmentRequest.objects.exists()


def test_an_uploaded_refused_file_is_shown_on_the_file_field(client: Client, alice: User) -> None:
    upload = SimpleUploadedFile("weak.csr", fixture_bytes("openssl-rsa1024.csr.pem"))

    response = logged_in(client, alice).post(reverse("portal:request-new"), {"csr_file": upload})

    assert response.status_code == 200
    assert "1024" in response.context["form"].errors["csr_file"][0]
    assert not EnrollmentRequest.objects.exists()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "Nothing was submitted"),
        ({"csr_text": "   "}, "Nothing was submitted"),
        ({"csr_text": "hello"}, "This is not a certificate request"),
        ({"csr_text": "<script>alert(1)</script>"}, "This is not a certificate request"),
        ({"csr_text": "-----BEGIN CERTIFICATE REQUEST-----\nMIIB"}, "incomplete"),
        ({"csr_text": "\x00\x01"}, "Null characters"),
    ],
)
def test_empty_or_garbage_input_gives_an_inline_error(
    client: Client, alice: User, data: dict[str, str], expected: str
) -> None:
    response = logged_in(client, alice).post(reverse("portal:request-new"), data)

    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not EnrollmentRequest.objects.exists()


def test_paste_and_upload_together_is_refused(client: Client, alice: User) -> None:
    upload = SimpleUploadedFile("a.csr", make_csr())

    response = logged_in(client, alice).post(
        reverse("portal:request-new"), {"csr_text": make_csr().decode(), "csr_file": upload}
    )

    assert "not both" in response.content.decode()
    assert not EnrollmentRequest.objects.exists()


def test_an_oversized_upload_is_refused_before_reading(
    client: Client, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = SimpleUploadedFile("big.csr", b"A" * (MAX_SUBMISSION_BYTES + 1))
    read: list[bool] = []

    def submission(self: CsrForm) -> bytes:
        read.append(True)
        return b""

    monkeypatch.setattr(CsrForm, "submission", submission)

    response = logged_in(client, alice).post(reverse("portal:request-new"), {"csr_file": big})

    assert response.status_code == 200
    assert "at most 16 KiB" in response.content.decode()
    assert not read, "the upload's bytes are never read"
    assert not EnrollmentRequest.objects.exists()


def test_an_oversized_paste_is_refused_and_not_echoed(client: Client, alice: User) -> None:
    text = "QUFB" * (MAX_SUBMISSION_BYTES // 4 + 1)

    response = logged_in(client, alice).post(reverse("portal:request-new"), {"csr_text": text})

    body = response.content.decode()
    assert "at most 16 KiB" in body
    assert text not in body
    assert not EnrollmentRequest.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        lambda: fixture_bytes("openssl-ec-p256.key.pem"),
        lambda: fixture_bytes("openssl-ec-p256.key.pem") + fixture_bytes("openssl-ec-p256.csr.pem"),
        lambda: fixture_bytes("openssl-rsa2048.key.pem"),
    ],
    ids=["ec-key", "key-then-csr", "rsa-key"],
)
def test_a_pasted_private_key_is_refused_not_echoed_not_stored_not_logged(
    client: Client, alice: User, caplog: pytest.LogCaptureFixture, payload: Callable[[], bytes]
) -> None:
    key_pem = payload()
    secret_lines = [line.decode() for line in key_pem.splitlines() if line and not line.startswith(b"-----")]
    caplog.set_level(logging.DEBUG)

    response = logged_in(client, alice).post(reverse("portal:request-new"), {"csr_text": key_pem.decode()})

    body = response.content.decode()
    assert response.status_code == 200
    assert "This is a private key" in body
    for line in secret_lines:
        assert line not in body
        assert line not in caplog.text
    assert response.context["form"]["csr_text"].value() == ""
    assert not EnrollmentRequest.objects.exists()


def test_an_uploaded_private_key_is_refused(client: Client, alice: User) -> None:
    key_pem = fixture_bytes("openssl-rsa2048.key.pem")
    der = serialization.load_pem_private_key(key_pem, password=None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    response = logged_in(client, alice).post(
        reverse("portal:request-new"), {"csr_file": SimpleUploadedFile("my.key", der)}
    )

    assert "This is a private key" in response.content.decode()
    assert not EnrollmentRequest.objects.exists()


def test_an_unverified_user_is_told_to_verify_and_cannot_submit(client: Client, db: None) -> None:
    carol = User.objects.create_user("carol", "carol@example.com", "carol-password-123")
    logged_in(client, carol)

    page = client.get(reverse("portal:request-new"))
    posted = client.post(reverse("portal:request-new"), {"csr_text": make_csr().decode()})

    for response in (page, posted):
        body = response.content.decode()
        assert response.status_code == 200
        assert "Verify your e-mail address" in body
        assert reverse("accounts:profile") in body
        assert 'name="csr_text"' not in body
    assert not EnrollmentRequest.objects.exists()
    dashboard = client.get(reverse("portal:dashboard")).content.decode()
    assert "Verify your e-mail address" in dashboard


def test_a_key_revoked_for_key_compromise_is_refused_in_a_new_request(
    client: Client, ca: CertificateAuthority, alice: User, bob: User, issue_for: IssueFor
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_for(alice, make_csr(key))
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)

    for user in (alice, bob):
        response = logged_in(client, user).post(
            reverse("portal:request-new"), {"csr_text": make_csr(key).decode()}
        )
        assert response.status_code == 200
        assert "reported as compromised" in response.content.decode()
    assert EnrollmentRequest.objects.count() == 1


# --- the request and certificate pages -------------------------------------------------------------


def test_the_request_page_shows_the_decision_history(
    client: Client, ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    rejected = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=rejected.pk, reason="Use your work account", by=admin_user)
    issued = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk, by=admin_user)
    assert issued.certificate is not None
    logged_in(client, alice)

    rejected_page = client.get(reverse("portal:request-detail", args=[rejected.pk])).content.decode()
    issued_page = client.get(reverse("portal:request-detail", args=[issued.pk])).content.decode()

    assert "Rejected" in rejected_page
    assert "by admin" in rejected_page
    assert "Use your work account" in rejected_page
    assert "Approved" in issued_page
    assert "by admin" in issued_page
    assert issued.certificate.serial in issued_page
    assert reverse("portal:certificate-detail", args=[issued.certificate.pk]) in issued_page
    assert "ECDSA P-256" in issued_page


def test_the_certificate_page_shows_serial_and_fingerprint_as_servers_print_them(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    cert = certificate.x509

    body = logged_in(client, alice).get(reverse("portal:certificate-detail", args=[certificate.pk])).content
    page = body.decode()

    nginx_serial = f"{cert.serial_number:X}"
    nginx_serial = nginx_serial if len(nginx_serial) % 2 == 0 else "0" + nginx_serial
    assert nginx_serial in page
    assert ":".join(nginx_serial[i : i + 2] for i in range(0, len(nginx_serial), 2)) in page
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    assert ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)) in page
    assert "CN=alice,O=Enroll Portal" in page
    assert "curl --cert alice-" in page
    assert "openssl pkcs12 -export -in alice-" in page
    assert "-legacy" in page
    assert ca.public_url("ca:cert-pem") in page
    assert ca.public_url("ca:crl-pem") in page
    for fmt in EXPORT_FORMATS:
        assert reverse("portal:certificate-download", args=[certificate.pk, fmt]) in page
    assert reverse("portal:certificate-revoke", args=[certificate.pk]) in page
    assert reverse("portal:certificate-renew", args=[certificate.pk]) in page


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("pem", "application/x-pem-file", ".pem"),
        ("der", "application/pkix-cert", ".cer"),
        ("chain", "application/x-pem-file", ".chain.pem"),
        ("pkcs7", "application/x-pkcs7-certificates", ".p7b"),
    ],
)
def test_downloads_are_attachments_of_the_right_type_that_parse(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    issue_for: IssueFor,
    fmt: str,
    content_type: str,
    extension: str,
) -> None:
    certificate = issue_for(alice)

    response = logged_in(client, alice).get(
        reverse("portal:certificate-download", args=[certificate.pk, fmt])
    )

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert f'filename="alice-{certificate.serial[:8].lower()}{extension}"' in disposition
    assert response["X-Content-Type-Options"] == "nosniff"
    match fmt:
        case "pem":
            assert x509.load_pem_x509_certificate(response.content) == certificate.x509
        case "der":
            assert x509.load_der_x509_certificate(response.content) == certificate.x509
        case "chain":
            chain = x509.load_pem_x509_certificates(response.content)
            assert chain == [certificate.x509, ca.certificate]
        case "pkcs7":
            bundle = pkcs7.load_pem_pkcs7_certificates(response.content)
            assert certificate.x509 in bundle
            assert ca.certificate in bundle


def test_the_dashboard_says_what_to_do_next(
    client: Client, ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    logged_in(client, alice)
    assert "Submit a request" in client.get(reverse("portal:dashboard")).content.decode()

    pending = flows.submit_csr(owner=alice, data=make_csr())
    page = client.get(reverse("portal:dashboard")).content.decode()
    assert f"Request #{pending.pk} is waiting for an administrator" in page
    assert "Submit a request" not in page

    issued = flows.approve(request_id=pending.pk, by=admin_user)
    assert issued.certificate is not None
    page = client.get(reverse("portal:dashboard")).content.decode()
    assert "Download your certificate" in page
    assert reverse("portal:certificate-detail", args=[issued.certificate.pk]) in page
    assert "Valid" in page


def test_the_dashboard_queries_do_not_grow_with_the_certificates(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    logged_in(client, alice)
    issue_for(alice)
    with CaptureQueriesContext(connection) as one:
        assert client.get(reverse("portal:dashboard")).status_code == 200
    for _ in range(3):
        issue_for(alice)
    with CaptureQueriesContext(connection) as four:
        page = client.get(reverse("portal:dashboard")).content.decode()

    assert page.count("Download your certificate") == 4
    assert len(four) == len(one)


def test_the_dashboard_marks_revoked_and_expired_certificates(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    revoked = issue_for(alice)
    revoke_certificate(certificate=revoked, reason=RevocationReason.SUPERSEDED)
    expired = issue_for(alice)
    Certificate.objects.filter(pk=expired.pk).update(
        not_before=expired.not_before.replace(year=2000), not_after=expired.not_after.replace(year=2001)
    )

    page = logged_in(client, alice).get(reverse("portal:dashboard")).content.decode()

    assert ">Revoked<" in page
    assert ">Expired<" in page
    assert "You have no valid certificate" in page
