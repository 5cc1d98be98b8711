"""Renewal: a new request linked to a certificate; same subject, new serial; key rules; auto-approval."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from ca.clock import utcnow
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, RevocationReason
from ca.services.keys import clear_key_cache, key_path
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]


def renew_url(certificate: Certificate) -> str:
    return reverse("portal:certificate-renew", args=[certificate.pk])


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def certificate(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor, key: ec.EllipticCurvePrivateKey
) -> Certificate:
    return issue_for(alice, make_csr(key))


def renew(client: Client, certificate: Certificate, csr: bytes) -> EnrollmentRequest | None:
    client.post(renew_url(certificate), {"csr_text": csr.decode()})
    return EnrollmentRequest.objects.filter(renewal_of=certificate).first()


def test_the_renew_page_shows_the_certificate_and_how_to_reuse_the_key(
    client: Client, alice: User, certificate: Certificate
) -> None:
    client.force_login(alice)

    response = client.get(renew_url(certificate))

    body = response.content.decode()
    assert response.status_code == 200
    assert certificate.serial in body
    assert "openssl req -new -key alice.key -out alice-renew.csr" in body
    assert 'name="csr_text"' in body
    assert "An administrator approves the renewal" in body


def test_renewing_with_the_same_key_makes_a_linked_request_and_a_new_serial_with_the_same_subject(
    client: Client,
    alice: User,
    admin_user: User,
    certificate: Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    client.force_login(alice)

    response = client.post(renew_url(certificate), {"csr_text": make_csr(key).decode()})

    renewal = EnrollmentRequest.objects.get(renewal_of=certificate)
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:request-detail", args=[renewal.pk])
    assert renewal.status == RequestStatus.SUBMITTED
    assert renewal.owner == alice
    assert renewal.spki_sha256 == certificate.spki_sha256
    issued = flows.approve(request_id=renewal.pk, by=admin_user)
    assert issued.certificate is not None
    assert issued.certificate.serial != certificate.serial
    assert issued.certificate.subject == certificate.subject == "CN=alice,O=Enroll Portal"
    assert issued.certificate.x509.public_key() == certificate.x509.public_key()
    page = client.get(reverse("portal:certificate-detail", args=[certificate.pk])).content.decode()
    assert "Renewed" in page
    assert issued.certificate.serial in page


def test_renewing_with_a_new_key_is_fine_too(client: Client, alice: User, certificate: Certificate) -> None:
    client.force_login(alice)

    renewal = renew(client, certificate, make_csr())

    assert renewal is not None
    assert renewal.spki_sha256 != certificate.spki_sha256


def test_a_key_revoked_for_key_compromise_is_refused_with_a_plain_message(
    client: Client, alice: User, certificate: Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    client.force_login(alice)

    response = client.post(renew_url(certificate), {"csr_text": make_csr(key).decode()})

    assert response.status_code == 200
    assert "reported as compromised" in response.content.decode()
    assert "Make a new key" in response.content.decode()
    assert not EnrollmentRequest.objects.filter(renewal_of=certificate).exists()
    assert renew(client, certificate, make_csr()) is not None, "a new key is accepted"


@pytest.mark.parametrize("reason", [RevocationReason.SUPERSEDED, RevocationReason.CESSATION_OF_OPERATION])
def test_a_key_revoked_for_another_reason_may_be_used_again(
    client: Client,
    alice: User,
    certificate: Certificate,
    key: ec.EllipticCurvePrivateKey,
    reason: RevocationReason,
) -> None:
    revoke_certificate(certificate=certificate, reason=reason)
    client.force_login(alice)

    assert renew(client, certificate, make_csr(key)) is not None


def test_a_compromised_key_is_refused_at_approval_too(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    issue_for: IssueFor,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    pending = flows.submit_csr(owner=alice, data=make_csr(key))
    other_request_same_key = issue_for(alice, make_csr(key))
    revoke_certificate(certificate=other_request_same_key, reason=RevocationReason.KEY_COMPROMISE)

    result = flows.approve(request_id=pending.pk, by=admin_user)

    assert result.status == RequestStatus.FAILED
    assert "compromised" in result.reason
    assert result.certificate is None


def test_bob_cannot_renew_alices_certificate(
    client: Client, alice: User, bob: User, certificate: Certificate
) -> None:
    client.force_login(bob)

    assert client.get(renew_url(certificate)).status_code == 404
    assert client.post(renew_url(certificate), {"csr_text": make_csr().decode()}).status_code == 404
    with pytest.raises(flows.SubmissionRefused, match="Only the owner"):
        flows.submit_renewal(owner=bob, certificate=certificate, data=make_csr())
    assert not EnrollmentRequest.objects.filter(renewal_of=certificate).exists()


def test_a_second_renewal_while_one_is_pending_is_refused(
    client: Client, alice: User, certificate: Certificate
) -> None:
    client.force_login(alice)
    first = renew(client, certificate, make_csr())
    assert first is not None

    page = client.get(renew_url(certificate)).content.decode()
    response = client.post(renew_url(certificate), {"csr_text": make_csr().decode()})

    assert f"waiting for a decision (request #{first.pk})" in page
    assert 'name="csr_text"' not in page
    assert response.status_code == 200
    assert EnrollmentRequest.objects.filter(renewal_of=certificate).count() == 1
    with pytest.raises(flows.SubmissionRefused, match="waiting for a decision"):
        flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())


def test_a_rejected_renewal_may_be_tried_again(
    client: Client, alice: User, admin_user: User, certificate: Certificate
) -> None:
    first = flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())
    flows.reject(request_id=first.pk, reason="Wrong device", by=admin_user)

    second = flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())

    assert second.status == RequestStatus.SUBMITTED


def test_renewal_needs_a_verified_email(client: Client, alice: User, certificate: Certificate) -> None:
    alice.email = "alice@new.example"
    alice.save()
    client.force_login(alice)

    page = client.get(renew_url(certificate)).content.decode()
    client.post(renew_url(certificate), {"csr_text": make_csr().decode()})

    assert "Verify your e-mail address" in page
    assert reverse("accounts:profile") in page
    assert not EnrollmentRequest.objects.filter(renewal_of=certificate).exists()


# --- auto-approval ---------------------------------------------------------------------------------


def test_with_auto_approval_a_valid_certificate_is_renewed_at_once(
    client: Client,
    settings: Settings,
    alice: User,
    certificate: Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    settings.ENROLL_AUTO_APPROVE_RENEWALS = True
    client.force_login(alice)
    assert "approved at once" in client.get(renew_url(certificate)).content.decode()

    response = client.post(renew_url(certificate), {"csr_text": make_csr(key).decode()})

    renewal = EnrollmentRequest.objects.get(renewal_of=certificate)
    assert renewal.status == RequestStatus.ISSUED
    assert renewal.decided_by is None
    assert renewal.decided_at is not None
    assert renewal.reason == "auto-approved renewal"
    assert renewal.certificate is not None
    assert renewal.certificate.serial != certificate.serial
    assert renewal.certificate.subject == certificate.subject
    assert response["Location"] == reverse("portal:certificate-detail", args=[renewal.certificate.pk])
    approved = AuditEntry.objects.filter(event=AuditEvent.REQUEST_APPROVED).order_by("-pk").first()
    assert approved is not None
    assert approved.actor is None
    assert approved.detail == f"request #{renewal.pk}, auto-approved renewal"
    detail = client.get(reverse("portal:request-detail", args=[renewal.pk])).content.decode()
    assert "automatically" in detail


def test_without_auto_approval_the_renewal_waits(
    client: Client, settings: Settings, alice: User, certificate: Certificate
) -> None:
    settings.ENROLL_AUTO_APPROVE_RENEWALS = False
    client.force_login(alice)

    renewal = renew(client, certificate, make_csr())

    assert renewal is not None
    assert renewal.status == RequestStatus.SUBMITTED
    assert renewal.certificate is None


def test_auto_approval_skips_a_revoked_certificate(
    client: Client, settings: Settings, alice: User, certificate: Certificate
) -> None:
    settings.ENROLL_AUTO_APPROVE_RENEWALS = True
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    client.force_login(alice)

    renewal = renew(client, certificate, make_csr())

    assert renewal is not None
    assert renewal.status == RequestStatus.SUBMITTED


def test_auto_approval_skips_an_expired_certificate(
    client: Client, settings: Settings, alice: User, certificate: Certificate
) -> None:
    settings.ENROLL_AUTO_APPROVE_RENEWALS = True
    Certificate.objects.filter(pk=certificate.pk).update(not_after=utcnow() - dt.timedelta(seconds=1))
    client.force_login(alice)

    renewal = renew(client, certificate, make_csr())

    assert renewal is not None
    assert renewal.status == RequestStatus.SUBMITTED


def test_an_auto_approved_renewal_that_cannot_be_signed_ends_failed(
    client: Client, settings: Settings, ca: CertificateAuthority, alice: User, certificate: Certificate
) -> None:
    settings.ENROLL_AUTO_APPROVE_RENEWALS = True
    key_path(ca).unlink()
    clear_key_cache()
    client.force_login(alice)

    response = client.post(renew_url(certificate), {"csr_text": make_csr().decode()}, follow=True)

    renewal = EnrollmentRequest.objects.get(renewal_of=certificate)
    assert renewal.status == RequestStatus.FAILED
    assert renewal.reason.startswith("Issuing failed: ")
    assert "could not be issued" in response.content.decode()
