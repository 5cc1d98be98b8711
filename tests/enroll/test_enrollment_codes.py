"""Enrollment codes where people make them: the owner's *Enroll a device* page, the admin, the command line;
and the device requests' marks in the admin's request list."""

from __future__ import annotations

import io
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from accounts.services import mark_email_verified
from ca.models import AuditEntry, AuditEvent, CertificateAuthority
from enroll import flows
from enroll.models import EnrollmentCode, EnrollmentRequest, RequestKind, RequestStatus, code_digest
from tests.helpers import make_csr

pytestmark = pytest.mark.django_db

DEVICES = "/devices/"


@pytest.fixture
def approver(db: None) -> User:
    user = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    return User.objects.get(pk=user.pk)


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


# --- the command line ----------------------------------------------------------------------------


def test_the_command_prints_the_code_alone_on_its_last_line(alice: User) -> None:
    lines = run("enrollment_code", "--user", "alice", "--device", "router-7", "--uses", "3", "--hours", "48")

    code = lines[-1]
    row = EnrollmentCode.objects.get()
    assert row.digest == code_digest(code)
    assert (row.device_name, row.max_uses, row.pre_approved) == ("router-7", 3, False)
    assert "usable 3 times" in lines[0]
    assert any("/.well-known/est/" in line for line in lines)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", code)


def test_the_operators_approved_code_is_pre_approved(alice: User) -> None:
    run("enrollment_code", "--user", "alice", "--approved")

    row = EnrollmentCode.objects.get()
    assert row.pre_approved
    assert row.created_by is None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--user", "nobody"], "There is no user"),
        (["--user", "alice", "--uses", "0"], "from 1 to"),
        (["--user", "alice", "--hours", "0"], "up to"),
        (["--user", "alice", "--device", "x" * 300], "characters"),
    ],
)
def test_the_command_refuses_bad_arguments_in_plain_words(alice: User, args: list[str], words: str) -> None:
    with pytest.raises(CommandError, match=words):
        run("enrollment_code", *args)
    assert not EnrollmentCode.objects.exists()


# --- the owner's page ----------------------------------------------------------------------------


def test_an_owner_makes_a_code_and_sees_it_once_with_the_addresses(client: Client, alice: User) -> None:
    client.force_login(alice)

    made = client.post(DEVICES, {"device_name": "office-printer"})
    again = client.get(DEVICES)

    assert made.status_code == 200
    assert made["Cache-Control"] == "no-store"
    page = made.content.decode()
    code = re.search(r'id="enrollment-code">([^<]+)<', page)
    assert code is not None
    row = EnrollmentCode.objects.get()
    assert row.digest == code_digest(code[1])
    assert not row.pre_approved
    assert row.created_by == alice
    assert "/.well-known/est/" in page
    assert "curl" in page
    listing = again.content.decode()
    assert code[1] not in listing
    assert "office-printer" in listing
    assert "0 of 1" in listing
    assert "Active" in listing


def test_an_approvers_own_code_from_the_page_is_not_pre_approved(client: Client, approver: User) -> None:
    mark_email_verified(approver)
    client.force_login(approver)

    client.post(DEVICES, {"device_name": "laptop"})

    assert EnrollmentCode.objects.get().pre_approved is False


def test_an_unverified_owner_is_told_to_verify_first_and_gets_no_code(client: Client) -> None:
    dave = User.objects.create_user("dave", "dave@example.com", "dave-password-123")
    client.force_login(dave)

    response = client.post(DEVICES, {"device_name": "router"})

    assert "Verify your e-mail address" in response.content.decode()
    assert not EnrollmentCode.objects.exists()


def test_a_bad_device_name_is_refused_on_the_form(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.post(DEVICES, {"device_name": "x" * 300})

    assert response.status_code == 200
    assert "characters" in response.content.decode()
    assert not EnrollmentCode.objects.exists()


def test_an_owner_revokes_a_code_and_its_waiting_request_is_withdrawn(
    client: Client, alice: User, ca: CertificateAuthority
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="router")
    der = x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER)
    pending = flows.enroll_with_code(code=code, csr_der=der, kind=RequestKind.EST, client_address="192.0.2.1")
    assert pending.request is not None
    client.force_login(alice)

    response = client.post(reverse("portal:device-code-revoke", args=[row.pk]), follow=True)

    row.refresh_from_db()
    assert row.revoked_at is not None
    assert "revoked" in response.content.decode()
    assert EnrollmentRequest.objects.get(pk=pending.request.pk).status == RequestStatus.REJECTED
    assert "Revoked" in client.get(DEVICES).content.decode()


def test_nobody_revokes_someone_elses_code_from_the_page(client: Client, alice: User, bob: User) -> None:
    row, _code = flows.create_enrollment_code(owner=alice, created_by=alice)
    client.force_login(bob)

    response = client.post(reverse("portal:device-code-revoke", args=[row.pk]))

    assert response.status_code == 404
    row.refresh_from_db()
    assert row.revoked_at is None


def test_the_page_needs_a_login(client: Client) -> None:
    assert client.get(DEVICES).status_code == 302


# --- the admin -----------------------------------------------------------------------------------


def test_an_approver_makes_a_pre_approved_code_for_an_account_in_the_admin(
    client: Client, approver: User, alice: User
) -> None:
    client.force_login(approver)

    response = client.post(
        reverse("admin:enroll_enrollmentcode_add"),
        {"owner": alice.pk, "device_name": "kiosk-3", "uses": 2, "hours": 72, "pre_approve": "on"},
    )

    assert response.status_code == 200, response.content
    page = response.content.decode()
    code = re.search(r'id="enrollment-code" class="enroll-code">([^<]+)<', page)
    assert code is not None
    row = EnrollmentCode.objects.get()
    assert row.digest == code_digest(code[1])
    assert (row.owner, row.created_by, row.pre_approved, row.max_uses) == (alice, approver, True, 2)
    assert "shown only this once" in page
    assert AuditEntry.objects.filter(event=AuditEvent.ENROLLMENT_CODE_CREATED, actor=approver).exists()
    listing = client.get(reverse("admin:enroll_enrollmentcode_changelist")).content.decode()
    assert "kiosk-3" in listing
    assert "0 of 2" in listing
    assert code[1] not in listing


def test_an_approver_cannot_pre_approve_a_code_for_their_own_account(client: Client, approver: User) -> None:
    client.force_login(approver)

    response = client.post(
        reverse("admin:enroll_enrollmentcode_add"),
        {"owner": approver.pk, "device_name": "", "uses": 1, "hours": 24, "pre_approve": "on"},
    )

    assert response.status_code == 200
    assert "Nobody pre-approves a code for their own account" in response.content.decode()
    assert not EnrollmentCode.objects.exists()


def test_an_approver_revokes_codes_from_the_admin_list(client: Client, approver: User, alice: User) -> None:
    row, _code = flows.create_enrollment_code(owner=alice, created_by=approver)
    client.force_login(approver)

    client.post(
        reverse("admin:enroll_enrollmentcode_changelist"),
        {"action": "revoke_selected", "_selected_action": [row.pk]},
    )

    row.refresh_from_db()
    assert row.revoked_at is not None
    assert row.revoked_by == approver


def test_staff_without_the_approval_permission_see_no_codes(client: Client, alice: User) -> None:
    clerk = User.objects.create_user("clerk", "clerk@example.com", "clerk-password-123", is_staff=True)
    flows.create_enrollment_code(owner=alice, created_by=alice)
    client.force_login(clerk)

    assert client.get(reverse("admin:enroll_enrollmentcode_changelist")).status_code == 403
    assert client.get(reverse("admin:enroll_enrollmentcode_add")).status_code == 403


def test_the_request_list_marks_device_requests_with_the_codes_maker_and_device(
    client: Client, admin_user: User, alice: User, approver: User, ca: CertificateAuthority
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="garage-door")
    der = x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER)
    outcome = flows.enroll_with_code(
        code=code,
        csr_der=der,
        kind=RequestKind.SCEP,
        client_address="192.0.2.1",
        transaction_id="t-1",
        single_use_only=True,
    )
    assert outcome.request is not None
    client.force_login(admin_user)

    listing = client.get(reverse("admin:enroll_enrollmentrequest_changelist")).content.decode()
    detail = client.get(
        reverse("admin:enroll_enrollmentrequest_change", args=[outcome.request.pk])
    ).content.decode()

    assert "SCEP" in listing
    assert "code by alice" in listing
    assert "garage-door" in listing
    assert "transaction ID t-1" in detail
    assert "BEGIN CERTIFICATE REQUEST" in detail  # a device's request is a PKCS#10 CSR too
    assert "through the approval queue" in detail


def test_the_admins_code_pages_render_for_an_approver(client: Client, approver: User, alice: User) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="kiosk-9")
    client.force_login(approver)

    add = client.get(reverse("admin:enroll_enrollmentcode_add"))
    change = client.get(reverse("admin:enroll_enrollmentcode_change", args=[row.pk]))

    assert add.status_code == 200
    assert "Pre-approved" in add.content.decode()
    assert change.status_code == 200
    page = change.content.decode()
    assert "kiosk-9" in page
    assert "carol" in page
    assert code not in page
    assert row.digest not in page


def test_the_owners_pages_show_a_device_request_and_its_certificate(
    client: Client, alice: User, approver: User, ca: CertificateAuthority
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="printer-2")
    der = x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER)
    outcome = flows.enroll_with_code(code=code, csr_der=der, kind=RequestKind.EST, client_address="192.0.2.1")
    assert outcome.request is not None
    assert outcome.certificate is not None
    client.force_login(alice)

    dashboard = client.get(reverse("portal:dashboard"))
    request_page = client.get(reverse("portal:request-detail", args=[outcome.request.pk]))
    certificate_page = client.get(reverse("portal:certificate-detail", args=[outcome.certificate.pk]))

    assert dashboard.status_code == request_page.status_code == certificate_page.status_code == 200
    assert "printer-2" in dashboard.content.decode()
    assert "printer-2" in certificate_page.content.decode()
