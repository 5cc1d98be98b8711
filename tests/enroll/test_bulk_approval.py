"""Bulk approval: flows.approve_many and the admin action "Approve selected requests" on many requests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.models import (
    AuditEntry,
    AuditEvent,
    BlockedKey,
    BlockedKeySource,
    Certificate,
    CertificateAuthority,
    ReservationState,
    SerialReservation,
)
from ca.pki.keypolicy import spki_sha256
from ca.pki.serials import format_serial
from ca.services import issuance, reservations
from ca.services.keys import key_path
from ca.services.reservations import SERIAL_COLLISION
from enroll import flows
from enroll.flows import approval
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import make_csr

Outcome = flows.ApprovalOutcome


def submit_many(owner: User, count: int) -> list[int]:
    return [flows.submit_csr(owner=owner, data=make_csr()).pk for _ in range(count)]


# --- many at once ---------------------------------------------------------------------------------------


def test_it_issues_every_request_with_unique_serials_and_audits_each_step(
    ca: CertificateAuthority, alice: User, bob: User, admin_user: User
) -> None:
    ids = submit_many(alice, 15) + submit_many(bob, 15)

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert [r.request_id for r in results] == ids
    assert {r.outcome for r in results} == {Outcome.ISSUED}
    certificates = Certificate.objects.all()
    assert len({c.serial for c in certificates}) == certificates.count() == 30
    for result in results:
        request = EnrollmentRequest.objects.select_related("certificate").get(pk=result.request_id)
        assert request.status == RequestStatus.ISSUED
        assert request.decided_by == admin_user
        assert request.certificate == result.certificate
        assert request.certificate is not None
        assert request.certificate.owner_id == request.owner_id
        assert request.certificate.spki_sha256 == request.spki_sha256
        assert request.certificate.x509.subject.rfc4514_string().startswith(f"CN={request.owner.username},")
    for event in (AuditEvent.REQUEST_APPROVED, AuditEvent.CERTIFICATE_ISSUED):
        assert AuditEntry.objects.filter(event=event, actor=admin_user).count() == 30
    issued_serials = set(
        AuditEntry.objects.filter(event=AuditEvent.CERTIFICATE_ISSUED).values_list("serial", flat=True)
    )
    assert issued_serials == {c.serial for c in certificates}


def test_it_decides_chunk_by_chunk_and_answers_in_the_given_order(
    ca: CertificateAuthority, alice: User, admin_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approval, "BULK_CHUNK", 3)
    ids = submit_many(alice, 8)
    asked = [*reversed(ids), ids[0]]  # a repeated id is decided once

    results = flows.approve_many(request_ids=asked, actor=admin_user)

    assert [r.request_id for r in results] == list(reversed(ids))
    assert {r.outcome for r in results} == {Outcome.ISSUED}
    assert Certificate.objects.count() == 8


def test_an_empty_selection_does_nothing(ca: CertificateAuthority, admin_user: User) -> None:
    assert flows.approve_many(request_ids=[], actor=admin_user) == []
    assert not AuditEntry.objects.filter(event=AuditEvent.REQUEST_APPROVED).exists()


# --- a mix in one call -------------------------------------------------------------------------------------


def valid(alice: User, admin: User) -> int:
    return flows.submit_csr(owner=alice, data=make_csr()).pk


def blocked_key(alice: User, admin: User) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    request = flows.submit_csr(owner=alice, data=make_csr(key))
    BlockedKey.objects.create(
        spki_sha256=spki_sha256(key.public_key()), source=BlockedKeySource.OPERATOR, created_at=utcnow()
    )
    return request.pk


def own_request(alice: User, admin: User) -> int:
    return flows.submit_csr(owner=admin, data=make_csr()).pk


def rejected(alice: User, admin: User) -> int:
    request = flows.submit_csr(owner=alice, data=make_csr())
    return flows.reject(request_id=request.pk, reason="Use your work account").pk


def issued(alice: User, admin: User) -> int:
    return flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk).pk


def altered_in_the_database(alice: User, admin: User) -> int:
    request = flows.submit_csr(owner=alice, data=make_csr())
    EnrollmentRequest.objects.filter(pk=request.pk).update(request_der=b"\x30\x03\x02\x01\x00")
    return request.pk


def unknown(alice: User, admin: User) -> int:
    return 987654


#: (make the request, outcome, status afterwards (None: no such request), words of the reason)
MIX: list[tuple[Callable[[User, User], int], Outcome, RequestStatus | None, str]] = [
    (valid, Outcome.ISSUED, RequestStatus.ISSUED, ""),
    (blocked_key, Outcome.FAILED, RequestStatus.FAILED, "reported as compromised"),
    (own_request, Outcome.REFUSED, RequestStatus.SUBMITTED, "Nobody may approve their own request"),
    (rejected, Outcome.REFUSED, RequestStatus.REJECTED, "only submitted requests can be approved"),
    (issued, Outcome.REFUSED, RequestStatus.ISSUED, "only submitted requests can be approved"),
    (altered_in_the_database, Outcome.FAILED, RequestStatus.FAILED, "not a valid PKCS#10"),
    (unknown, Outcome.REFUSED, None, "There is no request #987654"),
    (valid, Outcome.ISSUED, RequestStatus.ISSUED, ""),
]


def test_one_call_with_a_mix_gives_each_request_its_own_outcome(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    ids = [make(alice, admin_user) for make, *_ in MIX]
    before = {pk: status for pk, status in EnrollmentRequest.objects.values_list("pk", "status")}
    certificates_before = Certificate.objects.count()

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    for result, (make, outcome, status, reason) in zip(results, MIX, strict=True):
        request = EnrollmentRequest.objects.filter(pk=result.request_id).first()
        assert result.outcome == outcome, make.__name__
        assert (request.status if request else None) == status, make.__name__
        assert reason in result.reason, make.__name__
        if outcome == Outcome.ISSUED:
            assert request is not None
            assert request.certificate == result.certificate
        if outcome == Outcome.FAILED:
            assert request is not None
            assert request.reason == result.reason
            assert request.reason.startswith("Issuing failed: ")
            assert request.certificate is None
            assert request.decided_by == admin_user
        if outcome == Outcome.REFUSED and request is not None:
            assert request.status == before[request.pk]
    assert Certificate.objects.count() == certificates_before + 2
    failed = AuditEntry.objects.filter(event=AuditEvent.REQUEST_FAILED).values_list("detail", flat=True)
    assert len(failed) == 2


def test_an_unexpected_error_while_issuing_ends_the_approved_requests_failed_and_stores_nothing(
    ca: CertificateAuthority, alice: User, admin_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = submit_many(alice, 3)

    def explode(**kwargs: Any) -> list[Certificate | str]:
        now = utcnow()  # a row written before the failure must be rolled back
        Certificate.objects.create(
            ca=ca, serial="01", der=b"\x30\x00", not_before=now, not_after=now, created_at=now
        )
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(issuance, "issue", explode)

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert all("ZeroDivisionError" in r.reason for r in results)
    assert set(EnrollmentRequest.objects.values_list("status", flat=True)) == {RequestStatus.FAILED}
    assert not Certificate.objects.exists()


def test_without_a_ca_key_every_request_fails_with_the_reason(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    ids = submit_many(alice, 3)
    key_path(ca).unlink()

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert all(f"The key of CA '{ca.slug}' cannot be read" in r.reason for r in results)
    assert not Certificate.objects.exists()


# --- serials ------------------------------------------------------------------------------------------


@pytest.fixture
def taken_serial(ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]) -> int:
    return issue_for(alice).serial_int


def test_a_drawn_serial_that_is_taken_fails_the_batch_and_signs_nothing(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    taken_serial: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sequence = iter([0x7A11, taken_serial, 0x7A12])
    monkeypatch.setattr(reservations, "new_serial", lambda: next(sequence))
    signed: list[int] = []
    sign = issuance.finish_certificate  # type: ignore[attr-defined]

    def record_then_sign(**kwargs: Any) -> x509.Certificate:
        signed.append(kwargs["draft"].serial_number)
        return sign(**kwargs)

    monkeypatch.setattr(issuance, "finish_certificate", record_then_sign)
    ids = submit_many(alice, 3)

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert all(SERIAL_COLLISION in r.reason for r in results)
    assert signed == []  # a collision is an error before anything is signed, never a re-draw
    assert Certificate.objects.count() == 1
    assert not SerialReservation.objects.filter(serial__in=["7A11", "7A12"]).exists()  # none reserved


def test_a_serial_drawn_twice_in_one_batch_is_a_collision_too(
    ca: CertificateAuthority, alice: User, admin_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reservations, "new_serial", lambda: 0x5E1)
    ids = submit_many(alice, 2)

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert all(SERIAL_COLLISION in r.reason for r in results)
    assert not Certificate.objects.exists()


def test_every_serial_is_reserved_before_its_certificate_is_signed(
    ca: CertificateAuthority, alice: User, admin_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserved_when_signed: list[bool] = []
    sign = issuance.finish_certificate  # type: ignore[attr-defined]

    def check_then_sign(**kwargs: Any) -> x509.Certificate:
        serial = format_serial(serial=kwargs["draft"].serial_number)
        reserved_when_signed.append(SerialReservation.objects.filter(ca=ca, serial=serial).exists())
        return sign(**kwargs)

    monkeypatch.setattr(issuance, "finish_certificate", check_then_sign)
    ids = submit_many(alice, 3)

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert {r.outcome for r in results} == {Outcome.ISSUED}
    assert reserved_when_signed == [True, True, True]
    reserved = {
        s: (p, state) for s, p, state in SerialReservation.objects.values_list("serial", "purpose", "state")
    }
    assert reserved == {
        r.certificate.serial: (f"request #{r.request_id}", ReservationState.ISSUED)
        for r in results
        if r.certificate
    }


# --- e-mails ---------------------------------------------------------------------------------------------


def test_owners_hear_of_the_decision_once_it_is_committed(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    unverified = User.objects.create_user("carol", "carol@example.com", "carol-password-123")
    ids = [*submit_many(alice, 2), flows.submit_csr(owner=unverified, data=make_csr()).pk]
    ids.append(blocked_key(alice, admin_user))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        flows.approve_many(request_ids=ids, actor=admin_user)
        assert mail.outbox == []
    for callback in callbacks:
        callback()

    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com"] * 3
    subjects = sorted(m.subject for m in mail.outbox)
    assert sum("could not be issued" in s for s in subjects) == 1
    assert sum("is ready" in s for s in subjects) == 2


# --- the admin action -----------------------------------------------------------------------------------

CHANGELIST = reverse("admin:enroll_enrollmentrequest_changelist")


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_admin_action_approves_many_requests_and_sums_up(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    ids = submit_many(alice, 24)
    own = flows.submit_csr(owner=admin_user, data=make_csr()).pk
    client = Client()
    client.force_login(admin_user)

    response = client.post(CHANGELIST, {"action": "approve_selected", "_selected_action": [*ids, own]})

    assert response.status_code == 302
    texts = messages_of(response)
    assert texts == [
        "24 requests approved: 24 certificates issued.",
        f"1 request got no certificate (filter by status to see them): #{own}: Nobody may approve their own "
        "request; ask another administrator.",
    ]
    assert EnrollmentRequest.objects.filter(status=RequestStatus.ISSUED).count() == 24
    assert EnrollmentRequest.objects.get(pk=own).status == RequestStatus.SUBMITTED


def test_the_admin_action_lists_at_most_twenty_problems(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    ids = [flows.submit_csr(owner=admin_user, data=make_csr()).pk for _ in range(23)]
    client = Client()
    client.force_login(admin_user)

    response = client.post(CHANGELIST, {"action": "approve_selected", "_selected_action": ids})

    (text,) = messages_of(response)
    assert text.startswith("23 requests got no certificate")
    assert text.count("Nobody may approve") == 20
    assert text.endswith("; and 3 more.")


def test_certificates_issued_in_bulk_carry_the_verified_address(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    (result,) = flows.approve_many(request_ids=submit_many(alice, 1), actor=admin_user)

    assert result.certificate is not None
    san = result.certificate.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]


# --- several administrators at once (PostgreSQL: row locks) ------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
)
def test_bulk_approvals_at_once_decide_each_request_once(ca: CertificateAuthority, alice: User) -> None:
    from tests.ca.test_postgres_concurrency import run_together

    ids = submit_many(alice, 12)
    admins = [User.objects.create_superuser(f"admin{i}", f"admin{i}@example.com", "x") for i in range(3)]

    results, errors = run_together(
        [
            partial(flows.approve_many, request_ids=ids, actor=admins[0]),
            partial(flows.approve_many, request_ids=list(reversed(ids)), actor=admins[1]),
            partial(flows.approve_many, request_ids=ids[::2], actor=admins[2]),
        ]
    )

    assert errors == []
    issued = [r for batch in results for r in batch if r.outcome == Outcome.ISSUED]
    refused = [r for batch in results for r in batch if r.outcome == Outcome.REFUSED]
    assert sorted(r.request_id for r in issued) == sorted(ids)
    assert all("only submitted requests" in r.reason for r in refused)
    assert Certificate.objects.count() == 12
    assert set(EnrollmentRequest.objects.values_list("status", flat=True)) == {RequestStatus.ISSUED}
