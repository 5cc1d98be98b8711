"""Device names in the owner's e-mails: decisions, expiry reminders and revocations name the device."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks

from ca.models import Certificate, CertificateAuthority, Revocation, RevocationReason
from ca.services.revocation import revoke_certificate
from enroll import flows, notifications
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db


def named_certificate(user: User, name: str) -> Certificate:
    request = flows.submit_csr(owner=user, data=make_csr(), device_name=name)
    decided = flows.approve(request_id=request.pk)
    assert decided.certificate is not None, decided.reason
    return decided.certificate


def test_the_issued_mail_names_the_device_in_its_subject_and_body(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name="Work laptop")

    with django_capture_on_commit_callbacks(execute=True):
        flows.approve(request_id=request.pk, by=admin_user)

    (message,) = mail.outbox
    assert message.subject == f"Your certificate for Work laptop is ready (request #{request.pk})"
    assert "  Device:      Work laptop\n" in message.body


def test_a_mail_about_a_nameless_request_has_no_device_line(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    with django_capture_on_commit_callbacks(execute=True):
        flows.approve(request_id=request.pk, by=admin_user)

    (message,) = mail.outbox
    assert "Device:" not in message.body
    assert message.subject == f"Your certificate is ready (request #{request.pk})"


def test_the_rejection_mail_names_the_device(
    alice: User, admin_user: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name="Tablet & <pen>")

    with django_capture_on_commit_callbacks(execute=True):
        flows.reject(request_id=request.pk, reason="wrong team", by=admin_user)

    (message,) = mail.outbox
    assert f"request #{request.pk} for Tablet & <pen> was rejected" in message.body, "plain text, not escaped"


def test_the_failure_mail_names_the_device(alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name="Tablet")
    EnrollmentRequest.objects.filter(pk=request.pk).update(status=RequestStatus.FAILED, reason="CA down")

    assert notifications.notify_decision(request_id=request.pk)

    (message,) = mail.outbox
    assert f"request #{request.pk} for Tablet was approved, but" in message.body


def test_the_expiry_reminder_names_the_device(
    ca: CertificateAuthority, alice: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    certificate = named_certificate(alice, "Work laptop")

    with (
        time_machine.travel(certificate.not_after - dt.timedelta(days=7), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert notifications.send_expiry_reminders() == 1

    (message,) = mail.outbox
    assert message.subject == "Your client certificate for Work laptop expires in 7 days"
    assert "  Device:      Work laptop\n" in message.body


def test_the_key_compromise_mail_names_each_device(ca: CertificateAuthority, alice: User) -> None:
    certificate = named_certificate(alice, "Work laptop")
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    mail.outbox.clear()

    notifications.notify_key_compromise(revocations=list(Revocation.objects.all()))

    (message,) = mail.outbox
    assert f"serial {certificate.serial} (Work laptop), CN=alice" in message.body
