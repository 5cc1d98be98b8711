"""Batch signing: the signer takes a batch of certificates in one message, checks it with one query per kind
of fact, lints it where the key is (the web side then lints nothing itself), signs what is left and answers
per certificate: a signature, or why not. A lint refusal by the signer is that request's reason exactly as
a local lint refusal would be: the request FAILED, its serial discarded, no CA signature, on record."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from ca.clock import utcnow
from ca.models import (
    AuditEntry,
    AuditEvent,
    Certificate,
    CertificateAuthority,
    ReservationState,
    SerialReservation,
)
from ca.pki import signing
from ca.pki.profiles import PROFILES, Profile
from ca.services import issuance
from ca.signer import checks, client, protocol
from ca.signer.server import Signer
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.ca.test_lint_before_sign import allow_empty_eku
from tests.helpers import make_csr
from tests.signer.conftest import draft


def _tbs(work: Any) -> bytes:
    made = signing.draft_certificate(builder=work.builder(), like=work.ca.certificate.public_key())
    return made.tbs_certificate_bytes


def test_a_batch_is_signed_in_one_message_with_a_reason_for_each_certificate_refused(
    signer: Signer, ca: CertificateAuthority, alice: User, bob: User, admin_user: User
) -> None:
    approved = [draft(ca, alice, approver=admin_user) for _ in range(3)]
    unapproved = draft(ca, bob, approver=None, authorise=False)
    backend = client.SignerBackend(ca=ca, path=signer.path)
    algorithm = signing.signature_hash(public_key=backend.public_key())
    items = [_tbs(approved[0]), _tbs(unapproved), _tbs(approved[1]), _tbs(approved[2])]

    results = backend.sign_many(
        items=items, algorithm=algorithm, purpose=signing.Purpose.CERTIFICATE, lint=True
    )

    assert [isinstance(result, bytes) for result in results] == [True, False, True, True]
    assert str(results[1]).startswith("The signer refused to sign it: no issuance authorisation for serial")
    public_key = backend.public_key()
    for data, signature in zip(items, results, strict=True):
        if isinstance(signature, bytes):
            signing._verify(public_key=public_key, signature=signature, data=data, algorithm=algorithm)
    signer.writer.stop()
    assert AuditEntry.objects.filter(event=AuditEvent.SIGNER_SIGNED).count() == 3
    assert AuditEntry.objects.filter(event=AuditEvent.SIGNER_REFUSED, ca_slug=ca.slug).count() == 1


def test_the_checks_ask_the_database_once_per_kind_of_fact_whatever_the_batch_size(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    def queries(count: int) -> int:
        items = [_tbs(draft(ca, alice, approver=admin_user)) for _ in range(count)]
        algorithm = signing.signature_hash(public_key=client.SignerBackend(ca=ca, path="").public_key())
        with CaptureQueriesContext(connection) as captured:
            verdicts = checks.check_certificates(
                ca=ca, items=items, algorithm=algorithm, memory=checks.Memory(), now=utcnow()
            )
        assert all(isinstance(verdict, checks.Verdict) for verdict in verdicts), verdicts
        return len(captured.captured_queries)

    assert queries(1) == queries(20)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"items": []}, "'items' must be a list of 1 to"),
        ({"items": ["AA=="] * (protocol.MAX_BATCH + 1)}, "'items' must be a list of 1 to"),
        ({"purpose": "crl"}, "'sign-many' signs certificates only"),
        ({"lint": "yes"}, "'lint' must be true or false"),
        ({"items": ["not base64!"]}, "'data' is not base64"),
    ],
    ids=["empty", "too-many", "crl", "lint-not-bool", "not-base64"],
)
def test_a_malformed_batch_is_refused_with_the_reason(change: dict[str, object], reason: str) -> None:
    message = protocol.sign_many_message(
        ca="test-root",
        purpose=signing.Purpose.CERTIFICATE,
        algorithm=hashes.SHA256(),
        items=[b"x"],
        lint=False,
    )
    message.update(change)
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.parse_request(json.dumps(message).encode())


@pytest.fixture
def broken_profile(monkeypatch: pytest.MonkeyPatch) -> str:
    """A test-only profile with an empty extendedKeyUsage, which pkilint refuses (FATAL)."""
    allow_empty_eku(monkeypatch)
    monkeypatch.setitem(PROFILES, "broken", Profile("broken", (), dt.timedelta(days=30)))
    return "broken"


@pytest.mark.parametrize("bulk", [True, False], ids=["approve_many", "approve"])
def test_a_lint_refusal_by_the_signer_fails_the_request_as_a_local_lint_refusal_would(
    signer: Signer,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    admin_user: User,
    broken_profile: str,
    monkeypatch: pytest.MonkeyPatch,
    bulk: bool,
) -> None:
    def local_lint(*args: object, **kwargs: object) -> None:
        raise AssertionError("the web side linted although the signer lints before it signs")

    monkeypatch.setattr(issuance, "_lint_drafts", local_lint)
    sound = flows.submit_csr(owner=alice, data=make_csr())
    broken = flows.submit_csr(owner=bob, data=make_csr())
    EnrollmentRequest.objects.filter(pk=broken.pk).update(profile=broken_profile)

    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        if bulk:
            flows.approve_many(request_ids=[sound.pk, broken.pk], actor=admin_user)
        else:
            flows.approve(request_id=sound.pk, by=admin_user)
            flows.approve(request_id=broken.pk, by=admin_user)

    sound.refresh_from_db()
    broken.refresh_from_db()
    assert sound.status == RequestStatus.ISSUED
    assert broken.status == RequestStatus.FAILED
    assert broken.certificate is None
    assert broken.reason.startswith("Issuing failed: The certificate violates RFC 5280"), broken.reason
    assert "itu.invalid_asn1_syntax (FATAL)" in broken.reason
    assert "signer" not in broken.reason  # the words of a local lint refusal, nothing added
    assert list(Certificate.objects.values_list("owner", flat=True)) == [alice.pk]
    # no CA signature carried its serial: discarded with the findings, nothing to revoke
    refused = SerialReservation.objects.get(state=ReservationState.DISCARDED)
    assert "itu.invalid_asn1_syntax (FATAL)" in refused.note
    failed = AuditEntry.objects.get(event=AuditEvent.REQUEST_FAILED)
    assert "itu.invalid_asn1_syntax (FATAL)" in failed.detail
    signer.writer.stop()
    by_signer = AuditEntry.objects.get(event=AuditEvent.SIGNER_REFUSED, serial="")
    assert by_signer.detail.startswith("certificate for uid")
    assert "lint: itu.invalid_asn1_syntax" in by_signer.detail or "lint: The certificate" in by_signer.detail
    assert not AuditEntry.objects.filter(event=AuditEvent.SIGNER_SIGNED, serial=refused.serial).exists()
