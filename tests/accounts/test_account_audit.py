"""Every account event in the hash-chained audit log, the CRL's actor, and admin decisions in "Recent
actions" (issue 20, item 7; accounts.auditing). ``verify_audit`` keeps passing."""

from __future__ import annotations

import re
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks
from pytest_django.fixtures import Settings

from accounts import auditing, certlogin
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, RevocationReason
from ca.services.revocation import revoke_certificate
from enroll import flows
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

PASSWORD = "alice-password-123"
NEW_PASSWORD = "a-new-password-4567"


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Settings) -> None:
    settings.ENROLL_RATE_LIMITS = {}


def entries(event: AuditEvent) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(event=event).order_by("pk"))


def verify_audit_passes() -> None:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert re.search(r"\d+ entries", out.getvalue()), out.getvalue()


def test_login_logout_and_failed_logins_are_audited_without_the_password(alice: User) -> None:
    client = Client()
    login = reverse("accounts:login")
    client.post(login, {"username": "alice", "password": "secret-guess-1"}, REMOTE_ADDR="192.0.2.7")
    client.post(login, {"username": "nobody<b>", "password": "secret-guess-2"}, REMOTE_ADDR="192.0.2.7")
    assert (
        client.post(login, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="192.0.2.8").status_code
        == 302
    )
    client.post(reverse("accounts:logout"), REMOTE_ADDR="192.0.2.8")
    failed = entries(AuditEvent.LOGIN_FAILED)
    assert len(failed) == 2
    assert "username tried 'alice'" in failed[0].detail
    assert "username tried 'nobody<b>'" in failed[1].detail
    assert all("192.0.2.7" in entry.detail for entry in failed)
    assert "failures counted toward the lock-out: 1" in failed[0].detail
    everything = " ".join(AuditEntry.objects.values_list("detail", flat=True))
    assert "secret-guess" not in everything
    assert PASSWORD not in everything
    (logged_in,) = entries(AuditEvent.LOGIN)
    assert logged_in.actor_name == logged_in.subject_user == "alice"
    assert "192.0.2.8" in logged_in.detail
    (logged_out,) = entries(AuditEvent.LOGOUT)
    assert logged_out.subject_user == "alice"
    verify_audit_passes()


def test_a_very_long_username_tried_is_cut() -> None:
    Client().post(reverse("accounts:login"), {"username": "x" * 5000, "password": "p"})
    (failed,) = entries(AuditEvent.LOGIN_FAILED)
    assert "(cut)" in failed.detail
    assert len(failed.detail) < 400
    (attempt,) = AccessAttempt.objects.all()
    assert attempt.username == "x" * 150


def test_wrong_passwords_on_the_profile_are_audited_as_failed_logins(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    client.post(reverse("accounts:profile"), {"email": "a@example.org", "password": "guess-on-profile"})
    (failed,) = entries(AuditEvent.LOGIN_FAILED)
    assert "username tried 'alice'" in failed.detail
    assert "/accounts/profile/" in failed.detail
    assert "guess-on-profile" not in failed.detail


def test_sign_up_verification_email_change_and_password_change_are_audited(alice: User) -> None:
    client = Client()
    data = {
        "username": "carol",
        "email": "carol@example.com",
        "password1": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
    }
    assert client.post(reverse("accounts:signup"), data).status_code == 302
    assert [e.subject_user for e in entries(AuditEvent.SIGN_UP)] == ["carol"]
    link = re.search(r"http://[^/\s]+(/accounts/\S*verify\S*)", str(mail.outbox[0].body))
    assert link
    client.post(link.group(1))
    assert [e.subject_user for e in entries(AuditEvent.EMAIL_VERIFIED)] == ["carol"]

    client.force_login(alice)
    answer = client.post(
        reverse("accounts:profile"), {"email": "alice@new.example.org", "password": PASSWORD}
    )
    assert answer.status_code == 302
    (changed,) = entries(AuditEvent.EMAIL_CHANGED)
    assert changed.subject_user == "alice"
    assert "'alice@example.com' to 'alice@new.example.org'" in changed.detail

    answer = client.post(
        reverse("accounts:password-change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert answer.status_code == 302
    (password_changed,) = entries(AuditEvent.PASSWORD_CHANGED)
    assert password_changed.actor_name == "alice"
    assert NEW_PASSWORD not in " ".join(AuditEntry.objects.values_list("detail", flat=True))
    verify_audit_passes()


def test_a_password_reset_through_the_link_is_audited(alice: User) -> None:
    client = Client()
    client.post(reverse("accounts:password-reset"), {"email": "alice@example.com"})
    link = re.search(r"http://[^/\s]+(/accounts/\S+)", str(mail.outbox[-1].body))
    assert link, mail.outbox[-1].body
    form_page = client.get(link.group(1), follow=True)
    client.post(
        form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    (reset,) = entries(AuditEvent.PASSWORD_RESET)
    assert reset.subject_user == "alice"
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)


def test_a_certificate_sign_in_is_audited_with_the_certificate(
    settings: Settings, ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    from tests.accounts.test_certificate_login import forwarded, nginx_format, pem_of

    settings.ENROLL_CERT_LOGIN_ENABLED = True
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    certificate = issue_for(alice)
    client = Client()
    response = client.get(reverse("accounts:profile"), **forwarded(nginx_format(pem_of(certificate))))
    assert response.status_code == 200
    (signed_in,) = entries(AuditEvent.CERTIFICATE_LOGIN)
    assert signed_in.subject_user == "alice"
    assert certificate.serial in signed_in.detail
    assert not entries(AuditEvent.LOGIN)  # one entry, the certificate one
    assert auditing.CERTIFICATE_BACKEND == certlogin.BACKEND


def test_the_crl_after_a_revocation_by_a_person_names_that_person(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    issue_for: Callable[..., Certificate],
    django_capture_on_commit_callbacks: Any,
) -> None:
    certificate = issue_for(alice)
    capture: DjangoCaptureOnCommitCallbacks = django_capture_on_commit_callbacks
    with capture(execute=True):
        revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE, by=admin_user)
    crl = entries(AuditEvent.CRL_PUBLISHED)[-1]
    assert crl.actor_name == "admin"
    with capture(execute=True):
        revoke_certificate(certificate=issue_for(alice), reason=RevocationReason.SUPERSEDED)
    assert entries(AuditEvent.CRL_PUBLISHED)[-1].actor_name == ""  # the command line
    verify_audit_passes()


def test_admin_approvals_rejections_and_revocations_show_in_recent_actions(
    admin_client: Client, admin_user: User, ca: CertificateAuthority, alice: User
) -> None:
    changelist = reverse("admin:enroll_enrollmentrequest_changelist")
    approved = flows.submit_csr(owner=alice, data=make_csr(common_name="alice"))
    rejected = flows.submit_csr(owner=alice, data=make_csr(common_name="alice"))
    admin_client.post(changelist, {"action": "approve_selected", "_selected_action": [approved.pk]})
    admin_client.post(
        changelist,
        {"action": "reject_selected", "_selected_action": [rejected.pk], "post": "yes", "reason": "Not you."},
    )
    approved.refresh_from_db()
    rejected.refresh_from_db()
    assert approved.certificate is not None
    logs = {(e.object_repr, e.get_change_message()) for e in LogEntry.objects.filter(user=admin_user)}
    assert all(e.action_flag == CHANGE for e in LogEntry.objects.all())
    assert (str(approved), f"Approved: certificate {approved.certificate.serial}.") in logs
    assert (str(rejected), "Rejected: Not you.") in logs

    screen = reverse("admin:ca-revocation")
    confirm = admin_client.post(
        screen, {"step": "review", "reason": "superseded", "serials": approved.certificate.serial_colons}
    )
    confirm_form = confirm.context["confirm"]
    data = {"step": "revoke", **{k: v for k, v in confirm_form.initial.items() if k != "certificates"}}
    data["certificates"] = confirm_form.initial["certificates"]
    assert admin_client.post(screen, data).status_code == 302
    revoked = LogEntry.objects.filter(
        object_id=str(approved.certificate.pk), change_message__startswith="Revoked"
    )
    assert revoked.exists()
    assert "Revoked" in admin_client.get(reverse("admin:index")).content.decode()
