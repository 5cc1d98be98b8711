"""Issuing prepared before the transaction (ca.services.issuance.prepare): the request is re-checked, the
certificate drafted and linted before the issuing transaction takes its locks; inside it, only what reads
the database or the key is done (key refusals, the CA signature, the INSERT). Whatever changed meanwhile is
checked again; the serial's reservation and its issuance authorisation are committed together."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction

from ca.models import (
    BlockedKey,
    BlockedKeySource,
    Certificate,
    CertificateAuthority,
    IssuanceAuthorisation,
    ReservationState,
    SerialReservation,
)
from ca.pki import lint
from ca.pki.csr import parse_csr
from ca.pki.profiles import SubjectInfo
from ca.services import authorisations, issuance
from enroll import flows
from enroll.models import RequestKind, RequestStatus
from tests.ca.test_lint_before_sign import critical_aki
from tests.helpers import make_csr

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


def csr_der() -> bytes:
    return x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER)


def order_for(
    owner: User, *, der: bytes | None = None, email: str = "alice@example.com"
) -> issuance.IssueOrder:
    return issuance.IssueOrder(
        request_der=der or csr_der(), subject=SubjectInfo(owner.get_username(), email=email), owner=owner
    )


def addresses(certificate: Certificate) -> list[str]:
    names = certificate.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.RFC822Name)


@pytest.fixture
def lint_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Each call to lint: (certificates linted, the connection's atomic depth at the time)."""
    calls: list[tuple[int, int]] = []
    real = lint.lint_many

    def spy(*, ders: Sequence[bytes], parallel_from: int | None = None) -> list[list[lint.Finding]]:
        if ders:
            calls.append((len(ders), len(connection.atomic_blocks)))
        return real(ders=ders, parallel_from=parallel_from)

    monkeypatch.setattr(lint, "lint_many", spy)
    return calls


# --- the service ------------------------------------------------------------------------------------


def test_a_prepared_order_is_issued_from_its_draft_without_linting_it_again(
    ca: CertificateAuthority, alice: User, lint_calls: list[tuple[int, int]]
) -> None:
    order = order_for(alice)
    reserved = issuance.prepare(orders=[order], reserved=issuance.reserve(purposes=["test"], ca=ca, now=NOW))
    assert [n for n, _depth in lint_calls] == [1]

    with transaction.atomic():
        (certificate,) = issuance.issue(orders=[order], reserved=reserved)

    assert isinstance(certificate, Certificate)
    assert [n for n, _depth in lint_calls] == [1]
    assert certificate.serial == reserved.reservations[0].serial
    assert certificate.subject == "CN=alice"
    assert addresses(certificate) == ["alice@example.com"]
    draft = reserved.prepared[certificate.serial].certificate
    assert draft is not None
    assert certificate.x509.tbs_certificate_bytes == draft.tbs_certificate_bytes
    assert SerialReservation.objects.get(serial=certificate.serial).state == ReservationState.ISSUED


def test_a_key_blocked_after_preparing_is_still_refused_inside_the_transaction(
    ca: CertificateAuthority, alice: User
) -> None:
    der = csr_der()
    order = order_for(alice, der=der)
    reserved = issuance.prepare(orders=[order], reserved=issuance.reserve(purposes=["test"], ca=ca, now=NOW))
    BlockedKey.objects.create(
        spki_sha256=parse_csr(data=der).key.spki_sha256, source=BlockedKeySource.OPERATOR, created_at=NOW
    )

    with transaction.atomic():
        (outcome,) = issuance.issue(orders=[order], reserved=reserved)

    assert outcome == str(issuance.KEY_BLOCKED)
    assert not Certificate.objects.exists()
    assert SerialReservation.objects.get().state == ReservationState.DISCARDED


def test_an_order_that_changed_after_preparing_is_drafted_and_linted_again(
    ca: CertificateAuthority, alice: User, lint_calls: list[tuple[int, int]]
) -> None:
    der = csr_der()
    reserved = issuance.prepare(
        orders=[order_for(alice, der=der)], reserved=issuance.reserve(purposes=["test"], ca=ca, now=NOW)
    )
    changed = order_for(alice, der=der, email="alice@new.example.com")  # her address changed meanwhile

    with transaction.atomic():
        (certificate,) = issuance.issue(orders=[changed], reserved=reserved)

    assert isinstance(certificate, Certificate)
    assert addresses(certificate) == ["alice@new.example.com"]
    assert [n for n, _depth in lint_calls] == [1, 1]


def test_a_lint_refusal_found_while_preparing_refuses_the_same_draft_inside_the_transaction(
    ca: CertificateAuthority,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: object,
    lint_calls: list[tuple[int, int]],
) -> None:
    code = critical_aki(monkeypatch, settings)  # type: ignore[arg-type]
    order = order_for(alice)
    reserved = issuance.prepare(orders=[order], reserved=issuance.reserve(purposes=["test"], ca=ca, now=NOW))
    monkeypatch.undo()  # the draft made while preparing is the one that would be signed

    with transaction.atomic():
        (outcome,) = issuance.issue(orders=[order], reserved=reserved)

    assert isinstance(outcome, str)
    assert code in outcome
    assert not Certificate.objects.exists()
    assert SerialReservation.objects.get().state == ReservationState.DISCARDED
    assert [n for n, _depth in lint_calls] == [1]


def test_a_request_refused_while_preparing_is_refused_by_issue_with_the_same_reason(
    ca: CertificateAuthority, alice: User
) -> None:
    order = issuance.IssueOrder(
        request_der=b"\x30\x03\x02\x01\x00", subject=SubjectInfo("alice"), owner=alice
    )
    reserved = issuance.prepare(orders=[order], reserved=issuance.reserve(purposes=["test"], ca=ca, now=NOW))
    prepared = reserved.prepared[reserved.reservations[0].serial]
    assert prepared.refusal

    with transaction.atomic():
        (outcome,) = issuance.issue(orders=[order], reserved=reserved)

    assert outcome == prepared.refusal
    assert SerialReservation.objects.get().state == ReservationState.DISCARDED


def test_a_serial_and_its_issuance_authorisation_are_committed_together(
    ca: CertificateAuthority, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    approval = authorisations.Approval(None, [authorisations.Approved("a" * 64, "b" * 64, alice.pk)])
    reserved = issuance.reserve(purposes=["test"], ca=ca, now=NOW, approval=approval)
    (authorised,) = IssuanceAuthorisation.objects.all()
    assert authorised.serial == reserved.reservations[0].serial
    assert (authorised.spki_sha256, authorised.owner_id) == ("b" * 64, alice.pk)

    def fail(**kwargs: object) -> None:
        raise RuntimeError("the authorisation could not be written")

    monkeypatch.setattr(authorisations, "write", fail)
    with pytest.raises(RuntimeError):
        issuance.reserve(purposes=["test"], ca=ca, now=NOW, approval=approval)
    assert SerialReservation.objects.count() == 1  # the failed one left no reservation behind


def test_reserving_needs_one_approved_request_per_serial(ca: CertificateAuthority, alice: User) -> None:
    approval = authorisations.Approval(None, [authorisations.Approved("a" * 64, "b" * 64, alice.pk)])

    with pytest.raises(ValueError, match="one approved request per purpose"):
        issuance.reserve(purposes=["one", "two"], ca=ca, now=NOW, approval=approval)
    assert not SerialReservation.objects.exists()


def test_preparing_for_a_ca_that_cannot_issue_leaves_the_error_to_issue(
    ca: CertificateAuthority, alice: User
) -> None:
    order = order_for(alice)
    reserved = issuance.reserve(purposes=["test"], ca=ca, now=NOW)
    CertificateAuthority.objects.filter(pk=ca.pk).update(revoked_at=NOW)
    ca.refresh_from_db()
    reserved = issuance.Reserved(ca=ca, reservations=reserved.reservations, validity=None, now=NOW)

    assert issuance.prepare(orders=[order], reserved=reserved).prepared == {}
    with transaction.atomic():
        (outcome,) = issuance.issue(orders=[order], reserved=reserved)
    assert isinstance(outcome, str)
    assert "was revoked" in outcome


# --- the flows lint outside their transaction --------------------------------------------------------


def approver_user() -> User:
    user = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    return User.objects.get(pk=user.pk)


def approve_one(owner: User) -> RequestStatus:
    return RequestStatus(flows.approve(request_id=flows.submit_csr(owner=owner, data=make_csr()).pk).status)


def approve_in_bulk(owner: User) -> RequestStatus:
    ids = [flows.submit_csr(owner=owner, data=make_csr()).pk for _ in range(3)]
    results = flows.approve_many(request_ids=ids, actor=approver_user())
    (status,) = {RequestStatus(result.request.status) for result in results if result.request is not None}
    return status


def enroll_pre_approved(owner: User) -> RequestStatus:
    _row, code = flows.create_enrollment_code(
        owner=owner, created_by=approver_user(), device_name="kiosk", pre_approve=True
    )
    outcome = flows.enroll_with_code(
        code=code, csr_der=csr_der(), kind=RequestKind.EST, client_address="192.0.2.1"
    )
    assert outcome.request is not None
    return RequestStatus(outcome.request.status)


@pytest.mark.parametrize(
    "decide",
    [
        pytest.param(approve_one, id="approve"),
        pytest.param(approve_in_bulk, id="approve_many"),
        pytest.param(enroll_pre_approved, id="pre-approved-device"),
    ],
)
def test_lint_runs_before_the_issuing_transaction_and_once_per_certificate(
    ca: CertificateAuthority,
    alice: User,
    lint_calls: list[tuple[int, int]],
    decide: Callable[[User], RequestStatus],
) -> None:
    depth = len(connection.atomic_blocks)  # the test's own transaction, if any

    assert decide(alice) == RequestStatus.ISSUED

    assert lint_calls, "nothing was linted"
    assert all(at == depth for _n, at in lint_calls), lint_calls
    assert sum(n for n, _at in lint_calls) == Certificate.objects.count()
