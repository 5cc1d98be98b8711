"""The owner's e-mail for each decision (sent on commit), and the audit entries the flow writes."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from accounts import emails
from ca.models import AuditEntry, AuditEvent, CertificateAuthority
from ca.pki.errors import RequestRefused
from ca.services.keys import clear_key_cache, key_path
from enroll import flows
from enroll.models import RequestStatus
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db


def test_an_issued_certificate_mails_the_owner_a_link_to_its_page(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    with django_capture_on_commit_callbacks(execute=True):
        issued = flows.approve(request_id=request.pk, by=admin_user)

    assert issued.certificate is not None
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == f"Your certificate is ready (request #{request.pk})"
    assert f"http://pki.example.test/certificates/{issued.certificate.pk}/" in message.body
    assert issued.certificate.serial in message.body
    assert "approved by admin" in message.body
    assert "CN=alice,O=Enroll Portal" in message.body
    assert "BEGIN" not in message.body


def test_a_rejection_mails_the_reason_verbatim(
    alice: User, admin_user: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    with django_capture_on_commit_callbacks(execute=True):
        flows.reject(request_id=request.pk, reason="Use the <work> account & try again", by=admin_user)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == f"Your certificate request #{request.pk} was rejected"
    assert "Use the <work> account & try again" in message.body
    assert "rejected by admin" in message.body
    assert "http://pki.example.test/requests/new/" in message.body
    assert f"http://pki.example.test/requests/{request.pk}/" in message.body


def test_a_failure_mails_the_reason(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    key_path(ca).unlink()
    clear_key_cache()

    with django_capture_on_commit_callbacks(execute=True):
        failed = flows.approve(request_id=request.pk, by=admin_user)

    assert failed.status == RequestStatus.FAILED
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == f"Your certificate request #{request.pk} could not be issued"
    assert failed.reason in message.body
    assert "cannot be read" in message.body


def test_a_submission_alone_sends_no_mail(
    alice: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        flows.submit_csr(owner=alice, data=make_csr())

    assert mail.outbox == []


def test_no_mail_for_a_decision_that_was_rolled_back(
    alice: User, admin_user: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    def reject_then_fail() -> None:
        with transaction.atomic():
            flows.reject(request_id=request.pk, reason="No", by=admin_user)
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        reject_then_fail()

    assert mail.outbox == []
    request.refresh_from_db()
    assert request.status == RequestStatus.SUBMITTED


def test_an_unverified_address_gets_no_mail(
    ca: CertificateAuthority, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    carol = User.objects.create_user("carol", "carol@example.com", "carol-password-123")
    request = flows.submit_csr(owner=carol, data=make_csr())

    with django_capture_on_commit_callbacks(execute=True):
        flows.approve(request_id=request.pk)

    assert mail.outbox == []


def test_a_mail_server_failure_is_logged_and_the_decision_stands(
    alice: User,
    admin_user: User,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    def broken(*args: object, **kwargs: object) -> int:
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(emails, "send_mail", broken)
    request = flows.submit_csr(owner=alice, data=make_csr())
    caplog.set_level(logging.ERROR)

    with django_capture_on_commit_callbacks(execute=True):
        flows.reject(request_id=request.pk, reason="No", by=admin_user)

    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert "could not send the e-mail" in caplog.text


def test_links_follow_the_public_url_setting(
    alice: User,
    admin_user: User,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.ENROLL_PUBLIC_URL = "https://portal.example.org/pki-portal"
    request = flows.submit_csr(owner=alice, data=make_csr())

    with django_capture_on_commit_callbacks(execute=True):
        flows.reject(request_id=request.pk, reason="No", by=admin_user)

    assert f"https://portal.example.org/pki-portal/requests/{request.pk}/" in mail.outbox[0].body


# --- audit -----------------------------------------------------------------------------------------


def events() -> list[tuple[str, str, str]]:
    return [
        (entry.event, entry.actor_name, entry.subject_user)
        for entry in AuditEntry.objects.exclude(event=AuditEvent.CRL_PUBLISHED).order_by("pk")
    ]


def test_submission_approval_and_issuance_are_audited_with_the_actor(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    issued = flows.approve(request_id=request.pk, by=admin_user)

    assert issued.certificate is not None
    assert events() == [
        (AuditEvent.CA_CREATED, "", ""),
        (AuditEvent.REQUEST_SUBMITTED, "alice", "alice"),
        (AuditEvent.REQUEST_APPROVED, "admin", "alice"),
        (AuditEvent.CERTIFICATE_ISSUED, "admin", "alice"),
    ]
    submitted = AuditEntry.objects.get(event=AuditEvent.REQUEST_SUBMITTED)
    assert submitted.request_sha256 == request.request_sha256


def test_rejection_and_failure_are_audited(ca: CertificateAuthority, alice: User, admin_user: User) -> None:
    rejected = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=rejected.pk, reason="Unknown device", by=admin_user)
    failing = flows.submit_csr(owner=alice, data=make_csr())
    key_path(ca).unlink()
    clear_key_cache()
    flows.approve(request_id=failing.pk, by=admin_user)

    assert [event for event, _, _ in events()][-5:] == [
        AuditEvent.REQUEST_SUBMITTED,
        AuditEvent.REQUEST_REJECTED,
        AuditEvent.REQUEST_SUBMITTED,
        AuditEvent.REQUEST_APPROVED,
        AuditEvent.REQUEST_FAILED,
    ]
    rejection = AuditEntry.objects.get(event=AuditEvent.REQUEST_REJECTED)
    assert rejection.actor == admin_user
    assert "Unknown device" in rejection.detail
    failure = AuditEntry.objects.get(event=AuditEvent.REQUEST_FAILED)
    assert failure.request_sha256 == failing.request_sha256
    assert "cannot be read" in failure.detail


def test_a_refused_submission_is_not_audited(alice: User) -> None:
    with pytest.raises(RequestRefused):
        flows.submit_csr(owner=alice, data=b"garbage")

    assert not AuditEntry.objects.filter(event=AuditEvent.REQUEST_SUBMITTED).exists()


def test_an_auto_approved_renewal_mails_the_new_certificate(
    ca: CertificateAuthority,
    alice: User,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.ENROLL_AUTO_APPROVE_RENEWALS = True
    old = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk).certificate
    assert old is not None

    with django_capture_on_commit_callbacks(execute=True):
        renewal = flows.submit_renewal(owner=alice, certificate=old, data=make_csr())

    assert renewal.certificate is not None
    assert len(mail.outbox) == 1, "the first approval ran outside the captured transaction"
    body = mail.outbox[0].body
    assert "(auto-approved renewal)" in body
    assert f"Renews:      {old.serial}" in body
    assert f"http://pki.example.test/certificates/{renewal.certificate.pk}/" in body
    assert f"http://pki.example.test/certificates/{old.pk}/" in body
    assert 'reason "superseded"' in body
