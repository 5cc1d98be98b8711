"""Revoking an issuing CA (manage.py revoke_ca): on its parent's CRL and OCSP, no more issuing, audited."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks

from ca.errors import AlreadyRevoked, CAError
from ca.models import (
    AuditEntry,
    AuditEvent,
    Certificate,
    CertificateAuthority,
    CrlPublication,
    RevocationReason,
)
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.revocation import revoke_ca, revoke_certificate
from enroll import flows
from enroll.models import RequestStatus
from tests.conftest import make_csr


@pytest.fixture
def issuing(ca: CertificateAuthority) -> CertificateAuthority:
    return create_ca(name="Test Issuing CA", parent=ca, make_default=True)


def ask_about_ca(
    client: Client, child: CertificateAuthority, algorithm: hashes.HashAlgorithm
) -> ocsp.OCSPResponse:
    assert child.parent is not None
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(child.certificate, child.parent.certificate, algorithm)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = client.post(reverse("ca:responder"), data=request, content_type="application/ocsp-request")
    assert response.status_code == 200
    return ocsp.load_der_ocsp_response(response.content)


def test_a_revoked_issuing_ca_is_on_its_parents_crl_with_its_reason(
    ca: CertificateAuthority, issuing: CertificateAuthority
) -> None:
    revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE)

    crl = x509.load_der_x509_crl(bytes(current_crl(ca=ca).der))
    entry = crl.get_revoked_certificate_by_serial_number(issuing.certificate.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.ca_compromise
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()], ids=lambda a: a.name)  # noqa: S303
def test_the_parent_answers_good_then_revoked_for_its_issuing_ca(
    client: Client, ca: CertificateAuthority, issuing: CertificateAuthority, algorithm: hashes.HashAlgorithm
) -> None:
    assert ask_about_ca(client, issuing, algorithm).certificate_status is ocsp.OCSPCertStatus.GOOD

    revoke_ca(ca=issuing, reason=RevocationReason.CESSATION_OF_OPERATION)

    answer = ask_about_ca(client, issuing, algorithm)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.cessation_of_operation


def test_a_revoked_ca_stops_issuing_and_says_why(
    issuing: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    issue_for(alice)  # issues while the CA is in use
    revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE)
    request = flows.submit_csr(owner=alice, data=make_csr())

    decided = flows.approve(request_id=request.pk)

    assert decided.status == RequestStatus.FAILED
    assert "was revoked" in decided.reason
    assert "init_ca --parent" in decided.reason


def test_a_ca_below_a_revoked_ca_cannot_issue_either(issuing: CertificateAuthority, alice: User) -> None:
    below = create_ca(name="Below", parent=issuing, make_default=True)
    revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE)
    request = flows.submit_csr(owner=alice, data=make_csr())

    decided = flows.approve(request_id=request.pk)

    assert decided.status == RequestStatus.FAILED
    assert f"'{issuing.slug}' was revoked" in decided.reason
    assert below.revoked_at is None


def test_a_root_cannot_be_revoked(ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="is a root"):
        revoke_ca(ca=ca, reason=RevocationReason.CA_COMPROMISE)
    ca.refresh_from_db()
    assert ca.revoked_at is None


def test_revoking_twice_is_refused(issuing: CertificateAuthority) -> None:
    revoke_ca(ca=issuing, reason=RevocationReason.SUPERSEDED)
    with pytest.raises(AlreadyRevoked):
        revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE)
    issuing.refresh_from_db()
    assert issuing.revocation_reason == RevocationReason.SUPERSEDED


def test_the_revocation_is_audited(ca: CertificateAuthority, issuing: CertificateAuthority) -> None:
    revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE, by_name="root (command line)")

    entry = AuditEntry.objects.get(event=AuditEvent.CA_REVOKED)
    assert entry.ca_slug == ca.slug
    assert entry.serial == issuing.serial
    assert "root (command line)" in entry.detail
    call_command("verify_audit", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)  # the command commits, then publishes, as it does for the operator
def test_the_command_revokes_and_prints_the_parents_crl_number_last(
    ca: CertificateAuthority, issuing: CertificateAuthority
) -> None:
    out = io.StringIO()
    before = CrlPublication.objects.filter(ca=ca).count()
    call_command("revoke_ca", issuing.slug, "--reason", "ca_compromise", stdout=out)

    assert (
        CrlPublication.objects.filter(ca=ca).count() == before + 1
    )  # published when the revocation committed
    assert out.getvalue().strip().splitlines()[-1] == str(current_crl(ca=ca).number)
    issuing.refresh_from_db()
    assert issuing.revoked_at is not None
    assert "(command line)" in issuing.revoked_by


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--reason", "ca_compromise"], "no CA with the slug"),
        (["test-root", "--reason", "superseded"], "root"),
    ],
)
def test_the_command_explains_what_it_cannot_do(
    ca: CertificateAuthority, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("revoke_ca", *args, stdout=io.StringIO())


def test_the_admin_shows_a_revoked_ca(admin_client: Client, issuing: CertificateAuthority) -> None:
    revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE)

    page = admin_client.get(reverse("admin:ca_certificateauthority_changelist")).content.decode()

    assert "revoked" in page
    assert "CA compromise" in page


@pytest.mark.parametrize("slug", ["ocsp", "report", "health"])
def test_a_ca_cannot_take_the_name_of_a_public_url(db: None, slug: str) -> None:
    with pytest.raises(CAError, match="public URL"):
        create_ca(name="Clash", slug=slug)
    assert create_ca(name=slug.upper()).slug == f"{slug}-2"


def test_every_owner_of_a_valid_certificate_below_it_is_told_once(
    issuing: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: Callable[..., Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    first, second = issue_for(alice), issue_for(alice)
    gone = issue_for(bob)
    revoke_certificate(certificate=gone, reason=RevocationReason.SUPERSEDED)  # no longer valid: not told
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        revoke_ca(ca=issuing, reason=RevocationReason.CA_COMPROMISE)

    assert [message.to for message in mail.outbox] == [["alice@example.com"]]
    body = mail.outbox[0].body
    assert "Test Issuing CA" in body
    assert "ca compromise" in body
    assert first.serial in body
    assert second.serial in body
