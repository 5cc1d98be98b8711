"""Managed devices' requests in the flow (enroll.flows.devices): codes, pre-approval, polls, refusals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from accounts.services import mark_email_verified
from ca import audit
from ca.models import (
    AuditEntry,
    AuditEvent,
    BlockedKey,
    BlockedKeySource,
    Certificate,
    CertificateAuthority,
    ReservationState,
    RevocationReason,
    SerialReservation,
)
from ca.pki.csr import parse_csr
from ca.services.authorities import create_ca
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.flows import DeviceOutcomeKind, RefusalCause, devices
from enroll.models import EnrollmentCode, EnrollmentRequest, RequestKind, RequestStatus, code_digest
from tests.helpers import fixture_bytes, make_csr
from tests.pki.certmonger import certmonger_csr

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
ADDRESS = "192.0.2.10"


def der(pem: bytes | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    pem = pem or make_csr(key)
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def approver(db: None) -> User:
    user = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    return User.objects.get(pk=user.pk)  # permissions cache fresh


@pytest.fixture
def enroll(ca: CertificateAuthority) -> Callable[..., flows.DeviceOutcome]:
    def run(code: str, csr: bytes | None = None, **kwargs: object) -> flows.DeviceOutcome:
        kwargs.setdefault("kind", RequestKind.EST)
        kwargs.setdefault("client_address", ADDRESS)
        kwargs.setdefault("now", NOW)
        return flows.enroll_with_code(code=code, csr_der=der() if csr is None else csr, **kwargs)  # type: ignore[arg-type]

    return run


# --- codes ---------------------------------------------------------------------------------------


def test_it_stores_only_the_codes_digest_and_shows_the_code_once(alice: User, approver: User) -> None:
    row, code = flows.create_enrollment_code(
        owner=alice, created_by=approver, device_name="router-1", now=NOW
    )

    assert len(code) >= 32  # 24 random bytes, URL-safe base64
    stored = EnrollmentCode.objects.get(pk=row.pk)
    assert stored.digest == code_digest(code)
    assert code not in stored.digest
    assert (stored.max_uses, stored.uses, stored.device_name) == (1, 0, "router-1")
    assert stored.expires_at == NOW + dt.timedelta(hours=24)
    entry = AuditEntry.objects.get(event=AuditEvent.ENROLLMENT_CODE_CREATED)
    assert code not in entry.detail
    assert entry.actor == approver
    assert entry.subject_user == "alice"


@pytest.mark.parametrize(
    ("creator", "pre_approved"),
    [("approver_for_other", True), ("approver_for_self", False), ("owner", False), ("operator", True)],
)
def test_it_pre_approves_only_an_approvers_code_for_someone_elses_account(
    alice: User, approver: User, creator: str, pre_approved: bool
) -> None:
    owner, created_by = {
        "approver_for_other": (alice, approver),
        "approver_for_self": (approver, approver),
        "owner": (alice, alice),
        "operator": (alice, None),
    }[creator]
    row, _code = flows.create_enrollment_code(owner=owner, created_by=created_by, now=NOW)
    assert row.pre_approved is pre_approved


def test_it_refuses_a_pre_approved_code_asked_for_by_its_own_owner(approver: User) -> None:
    with pytest.raises(flows.SubmissionRefused, match="nobody approves their own"):
        flows.create_enrollment_code(owner=approver, created_by=approver, pre_approve=True, now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"uses": 0}, "from 1 to"),
        ({"hours": 0}, "up to"),
        ({"hours": 24 * 365}, "up to"),
        ({"device_name": "x" * 500}, "characters"),
    ],
)
def test_it_refuses_a_code_with_bad_limits_and_says_which(
    alice: User, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(flows.SubmissionRefused, match=words):
        flows.create_enrollment_code(owner=alice, created_by=alice, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert not EnrollmentCode.objects.exists()


# --- enrolling -----------------------------------------------------------------------------------


def test_a_pre_approved_code_issues_at_once_with_the_accounts_subject(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="kiosk", now=NOW)

    outcome = enroll(code, der(make_csr(common_name="device asks for this")))

    assert outcome.kind == DeviceOutcomeKind.ISSUED, outcome.reason
    assert outcome.certificate is not None
    assert outcome.request is not None
    assert outcome.request.kind == RequestKind.EST
    assert outcome.request.enrollment_code == row
    assert outcome.request.decided_by == approver
    assert outcome.certificate.device_name == "kiosk"
    cert = x509.load_der_x509_certificate(bytes(outcome.certificate.der))
    assert cert.subject.rfc4514_string().startswith("CN=alice")
    row.refresh_from_db()
    assert row.uses == 1
    events = list(AuditEntry.objects.values_list("event", flat=True).order_by("pk"))
    assert AuditEvent.ENROLLMENT_CODE_USED in events
    assert AuditEvent.REQUEST_SUBMITTED in events
    assert AuditEvent.REQUEST_APPROVED in events


def test_an_owners_code_waits_for_approval_and_the_repeat_is_a_poll(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=alice, now=NOW)
    key = ec.generate_private_key(ec.SECP256R1())

    first = enroll(code, der(key=key))
    again = enroll(code, der(key=key))  # a new CSR for the same key: the same request

    assert first.kind == again.kind == DeviceOutcomeKind.PENDING
    assert first.retry_after == 60
    assert "waiting for an approver" in first.reason
    assert first.request is not None
    assert again.request is not None
    assert first.request.pk == again.request.pk
    assert EnrollmentRequest.objects.count() == 1
    flows.approve(request_id=first.request.pk, by=approver)
    mail.outbox.clear()
    done = enroll(code, der(key=key))
    assert done.kind == DeviceOutcomeKind.ISSUED
    assert done.certificate is not None
    assert Certificate.objects.count() == 1


def test_a_rejected_device_request_is_refused_on_its_next_poll(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=alice, now=NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    first = enroll(code, der(key=key))
    assert first.request is not None
    flows.reject(request_id=first.request.pk, by=approver, reason="not one of our devices")

    polled = enroll(code, der(key=key))

    assert polled.kind == DeviceOutcomeKind.REFUSED
    assert polled.cause == RefusalCause.REJECTED
    assert "not one of our devices" in polled.reason


@pytest.mark.parametrize("state", ["wrong", "reused", "expired", "revoked"])
def test_an_unusable_code_is_refused_in_plain_words_and_nothing_is_stored(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], state: str
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)
    now = NOW
    if state == "wrong":
        code = code[:-2] + ("AA" if not code.endswith("AA") else "BB")
    elif state == "reused":
        assert enroll(code).kind == DeviceOutcomeKind.ISSUED
    elif state == "expired":
        now = NOW + dt.timedelta(hours=24, seconds=1)
    else:
        flows.revoke_enrollment_code(code_id=row.pk, actor=alice, now=NOW)
    requests_before = EnrollmentRequest.objects.count()

    outcome = enroll(code, now=now)

    assert outcome.kind == DeviceOutcomeKind.REFUSED
    assert outcome.certificate is None
    expected = {
        "wrong": ("not valid", RefusalCause.BAD_CODE),
        "reused": ("used already", RefusalCause.CODE_UNUSABLE),
        "expired": ("expired", RefusalCause.CODE_UNUSABLE),
        "revoked": ("revoked", RefusalCause.CODE_UNUSABLE),
    }[state]
    assert expected[0] in outcome.reason
    assert outcome.cause == expected[1]
    assert EnrollmentRequest.objects.count() == requests_before


def test_wrong_codes_lock_the_address_out_and_a_right_code_from_there_waits(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], settings: Settings
) -> None:
    settings.ENROLL_RATE_LIMITS = {
        **settings.ENROLL_RATE_LIMITS,
        "device_code": {"address": "3/h", "code": "10/h"},
    }
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)
    for attempt in range(3):
        assert enroll(f"wrong-{attempt}").cause == RefusalCause.BAD_CODE

    locked = enroll(code)
    elsewhere = enroll(code, client_address="198.51.100.7")

    assert locked.cause == RefusalCause.LOCKED_OUT
    assert locked.retry_after > 0
    assert "Try again in" in locked.reason
    assert elsewhere.kind == DeviceOutcomeKind.ISSUED


def test_a_code_tried_too_often_is_locked_whatever_the_address(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], settings: Settings
) -> None:
    settings.ENROLL_RATE_LIMITS = {
        **settings.ENROLL_RATE_LIMITS,
        "device_code": {"address": "", "code": "2/h"},
    }
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)
    flows.revoke_enrollment_code(code_id=row.pk, actor=approver, now=NOW)
    for number in range(2):
        assert enroll(code, client_address=f"203.0.113.{number}").cause == RefusalCause.CODE_UNUSABLE

    assert enroll(code, client_address="203.0.113.99").cause == RefusalCause.LOCKED_OUT


def test_a_multi_use_code_is_refused_on_scep_with_the_reason(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, uses=5, now=NOW)

    outcome = enroll(code, kind=RequestKind.SCEP, transaction_id="tx-1", single_use_only=True)

    assert outcome.cause == RefusalCause.CODE_UNUSABLE
    assert "single-use" in outcome.reason
    assert not EnrollmentRequest.objects.exists()


def test_a_multi_use_code_enrolls_several_devices_up_to_its_limit(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, uses=2, now=NOW)

    outcomes = [enroll(code) for _ in range(3)]

    assert [o.kind for o in outcomes] == [
        DeviceOutcomeKind.ISSUED,
        DeviceOutcomeKind.ISSUED,
        DeviceOutcomeKind.REFUSED,
    ]
    row.refresh_from_db()
    assert row.uses == 2


def test_a_scep_repeat_of_a_transaction_id_is_a_poll_and_find_device_request_finds_it(
    alice: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=alice, now=NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = der(key=key)

    first = enroll(code, csr, kind=RequestKind.SCEP, transaction_id="abc", single_use_only=True)
    again = enroll(code, csr, kind=RequestKind.SCEP, transaction_id="abc", single_use_only=True)
    other_key = enroll(code, der(), kind=RequestKind.SCEP, transaction_id="abc", single_use_only=True)
    found = flows.find_device_request(transaction_id="abc", kind=RequestKind.SCEP)

    assert first.kind == again.kind == DeviceOutcomeKind.PENDING
    assert found is not None
    assert found.request is not None
    assert first.request is not None
    assert found.request.pk == first.request.pk
    assert other_key.kind == DeviceOutcomeKind.REFUSED
    assert "another key" in other_key.reason
    assert flows.find_device_request(transaction_id="nope", kind=RequestKind.SCEP) is None
    assert EnrollmentRequest.objects.count() == 1


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x82\xff\xff" + b"\x00" * 10, b"A" * 100_000])
def test_a_garbage_request_is_refused_and_does_not_use_the_code(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], body: bytes
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)

    outcome = enroll(code, body)

    assert outcome.cause == RefusalCause.BAD_REQUEST
    assert outcome.reason
    row.refresh_from_db()
    assert row.uses == 0


def test_a_key_the_policy_refuses_is_refused_with_the_portals_words(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)
    weak = fixture_bytes("openssl-rsa1024.csr.pem")

    outcome = enroll(code, der(weak))

    assert outcome.cause == RefusalCause.BAD_REQUEST
    assert "1024" in outcome.reason
    assert not EnrollmentRequest.objects.exists()


def test_a_blocked_key_is_refused_and_the_code_stays_unused(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = der(key=key)
    BlockedKey.objects.create(
        spki_sha256=parse_csr(data=csr).key.spki_sha256, source=BlockedKeySource.OPERATOR, created_at=NOW
    )

    outcome = enroll(code, csr)

    assert outcome.cause == RefusalCause.NOT_ALLOWED
    assert outcome.certificate is None
    row.refresh_from_db()
    assert row.uses == 0
    assert not EnrollmentRequest.objects.exists()


def test_an_unverified_owner_cannot_enroll_a_device(
    approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    dave = User.objects.create_user("dave", "dave@example.com", "dave-password-123")
    _row, code = flows.create_enrollment_code(owner=dave, created_by=approver, now=NOW)

    outcome = enroll(code)

    assert outcome.cause == RefusalCause.NOT_ALLOWED
    assert "Verify your e-mail address" in outcome.reason


def test_revoking_a_code_rejects_its_waiting_requests(
    alice: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=alice, now=NOW)
    pending = enroll(code)
    assert pending.request is not None

    flows.revoke_enrollment_code(code_id=row.pk, actor=alice, now=NOW)

    assert EnrollmentRequest.objects.get(pk=pending.request.pk).status == RequestStatus.REJECTED
    assert AuditEntry.objects.filter(event=AuditEvent.ENROLLMENT_CODE_REVOKED).count() == 1


def test_only_the_owner_or_an_approver_revokes_a_code(alice: User, bob: User) -> None:
    row, _code = flows.create_enrollment_code(owner=alice, created_by=alice, now=NOW)
    with pytest.raises(flows.FlowError, match="owner or an approver"):
        flows.revoke_enrollment_code(code_id=row.pk, actor=bob, now=NOW)


def test_a_named_ca_issues_the_device_certificate(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], ca: CertificateAuthority
) -> None:
    other = create_ca(name="Devices CA", slug="devices")
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)

    outcome = enroll(code, ca=other)

    assert outcome.kind == DeviceOutcomeKind.ISSUED, outcome.reason
    assert outcome.certificate is not None
    assert outcome.certificate.ca == other


# --- re-enrolling --------------------------------------------------------------------------------


@pytest.fixture
def device_certificate(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> Certificate:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="router", now=NOW)
    outcome = enroll(code)
    assert outcome.certificate is not None
    return outcome.certificate


def test_reenroll_issues_a_new_certificate_with_the_same_subject(device_certificate: Certificate) -> None:
    outcome = flows.reenroll(
        certificate=device_certificate, csr_der=der(), kind=RequestKind.EST, client_address=ADDRESS, now=NOW
    )

    assert outcome.kind == DeviceOutcomeKind.ISSUED, outcome.reason
    assert outcome.certificate is not None
    assert outcome.certificate.pk != device_certificate.pk
    assert outcome.certificate.subject == device_certificate.subject
    assert outcome.certificate.device_name == "router"
    assert outcome.request is not None
    assert outcome.request.renewal_of == device_certificate


def test_reenroll_with_a_revoked_certificate_is_refused_and_nothing_is_issued(
    device_certificate: Certificate,
) -> None:
    revoke_certificate(certificate=device_certificate, reason=RevocationReason.SUPERSEDED)
    count = Certificate.objects.count()

    outcome = flows.reenroll(
        certificate=device_certificate, csr_der=der(), kind=RequestKind.EST, client_address=ADDRESS, now=NOW
    )

    assert outcome.kind == DeviceOutcomeKind.REFUSED
    assert "revoked" in outcome.reason
    assert Certificate.objects.count() == count


def test_reenroll_with_an_expired_certificate_is_refused(device_certificate: Certificate) -> None:
    later = device_certificate.not_after + dt.timedelta(seconds=1)

    outcome = flows.reenroll(
        certificate=device_certificate, csr_der=der(), kind=RequestKind.EST, client_address=ADDRESS, now=later
    )

    assert outcome.kind == DeviceOutcomeKind.REFUSED
    assert "expired" in outcome.reason


def test_reenroll_waits_for_approval_when_device_renewals_are_not_automatic(
    device_certificate: Certificate, settings: Settings
) -> None:
    settings.ENROLL_AUTO_APPROVE_DEVICE_RENEWALS = False
    key = ec.generate_private_key(ec.SECP256R1())

    first = flows.reenroll(
        certificate=device_certificate,
        csr_der=der(key=key),
        kind=RequestKind.EST,
        client_address=ADDRESS,
        now=NOW,
    )
    again = flows.reenroll(
        certificate=device_certificate,
        csr_der=der(key=key),
        kind=RequestKind.EST,
        client_address=ADDRESS,
        now=NOW,
    )

    assert first.kind == again.kind == DeviceOutcomeKind.PENDING
    assert first.request is not None
    assert again.request is not None
    assert first.request.pk == again.request.pk


# --- the same e-mails ----------------------------------------------------------------------------


def test_a_device_certificate_mails_the_owner_as_a_portal_request_does(
    alice: User,
    approver: User,
    enroll: Callable[..., flows.DeviceOutcome],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="kiosk", now=NOW)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        outcome = enroll(code)

    assert outcome.request is not None
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert mail.outbox[0].subject == f"Your certificate for kiosk is ready (request #{outcome.request.pk})"


def test_a_queued_device_request_is_announced_to_the_approvers(
    alice: User,
    approver: User,
    enroll: Callable[..., flows.DeviceOutcome],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    mark_email_verified(approver)
    _row, code = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="kiosk", now=NOW)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        outcome = enroll(code)

    assert outcome.kind == DeviceOutcomeKind.PENDING
    assert [m.to for m in mail.outbox] == [["carol@example.com"]]
    assert "kiosk" in mail.outbox[0].body


# --- the same request twice at once (the race the code's row lock settles; PostgreSQL threads in
# tests/enroll/test_device_concurrency.py) ---------------------------------------------------------


def test_a_repeat_stored_meanwhile_is_answered_as_a_poll_and_uses_the_code_once(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=alice, uses=3, now=NOW)
    csr = der(key=ec.generate_private_key(ec.SECP256R1()))
    first = enroll(code, csr)
    real_poll = devices._poll
    calls = iter([None])  # the second call's first look finds nothing, as if the first were not committed yet
    monkeypatch.setattr(devices, "_poll", lambda *a, **k: next(calls, real_poll(*a, **k)))

    second = enroll(code, csr)

    assert first.request is not None
    assert second.request is not None
    assert second.request.pk == first.request.pk
    assert second.kind == DeviceOutcomeKind.PENDING
    assert EnrollmentRequest.objects.count() == 1
    row.refresh_from_db()
    assert row.uses == 1


def test_a_pre_approved_repeat_stored_meanwhile_is_a_poll_and_its_serial_is_discarded(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, uses=2, now=NOW)
    csr = der(key=ec.generate_private_key(ec.SECP256R1()))
    first = enroll(code, csr)
    real_poll = devices._poll
    calls = iter([None])  # the second call's first look finds nothing, as if the first were not committed yet
    monkeypatch.setattr(devices, "_poll", lambda *a, **k: next(calls, real_poll(*a, **k)))

    second = enroll(code, csr)

    assert first.kind == second.kind == DeviceOutcomeKind.ISSUED
    assert second.certificate == first.certificate
    assert Certificate.objects.count() == 1
    row.refresh_from_db()
    assert row.uses == 1
    states = sorted(SerialReservation.objects.values_list("state", flat=True))
    assert states == sorted([ReservationState.ISSUED, ReservationState.DISCARDED])


def test_a_pre_approved_enrollment_is_one_transaction_with_its_four_entries_appended_at_once(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="kiosk", now=NOW)
    first = AuditEntry.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0

    with CaptureQueriesContext(connection) as queries:
        outcome = enroll(code)

    assert outcome.kind == DeviceOutcomeKind.ISSUED, outcome.reason
    written = list(
        AuditEntry.objects.filter(sequence__gt=first).order_by("sequence").values_list("sequence", "event")
    )
    assert written == [
        (first + 1, AuditEvent.ENROLLMENT_CODE_USED),
        (first + 2, AuditEvent.REQUEST_SUBMITTED),
        (first + 3, AuditEvent.REQUEST_APPROVED),
        (first + 4, AuditEvent.CERTIFICATE_ISSUED),
    ]
    statements = [query["sql"] for query in queries.captured_queries]
    assert sum(sql.startswith('INSERT INTO "ca_auditentry"') for sql in statements) == 1
    # 62 statements before the enrollment was one transaction with cached look-ups (docs/DEVICES.md).
    assert len(statements) <= 30, "\n".join(statements)
    (reservation,) = SerialReservation.objects.all()  # reserved (committed) before anything was signed
    assert reservation.state == ReservationState.ISSUED
    assert "EST request with enrollment code" in reservation.purpose
    assert audit.verify_chain().intact


def test_certmongers_request_with_an_underscore_in_its_printable_cn_enrolls(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)
    csr = certmonger_csr(ec.generate_private_key(ec.SECP256R1()), challenge=code)

    outcome = enroll(code, csr, kind=RequestKind.SCEP, transaction_id="certmonger-1", single_use_only=True)

    assert outcome.kind == DeviceOutcomeKind.ISSUED, outcome.reason
    assert outcome.request is not None
    assert outcome.certificate is not None
    assert bytes(outcome.request.request_der) == csr  # stored as sent
    assert outcome.request.requested_subject == "CN=certmonger_device"  # shown, ignored
    issued = x509.load_der_x509_certificate(bytes(outcome.certificate.der))
    assert issued.subject.rfc4514_string().startswith("CN=alice")


def test_a_reenrollment_repeat_stored_meanwhile_is_answered_as_a_poll(
    device_certificate: Certificate, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ENROLL_AUTO_APPROVE_DEVICE_RENEWALS = False
    csr = der(key=ec.generate_private_key(ec.SECP256R1()))
    kwargs = {
        "certificate": device_certificate,
        "csr_der": csr,
        "kind": RequestKind.EST,
        "client_address": ADDRESS,
    }
    first = flows.reenroll(**kwargs, now=NOW)  # type: ignore[arg-type]
    real_poll = devices._poll
    calls = iter([None])
    monkeypatch.setattr(devices, "_poll", lambda *a, **k: next(calls, real_poll(*a, **k)))

    second = flows.reenroll(**kwargs, now=NOW)  # type: ignore[arg-type]

    assert first.request is not None
    assert second.request is not None
    assert second.request.pk == first.request.pk
    assert EnrollmentRequest.objects.filter(renewal_of=device_certificate).count() == 1


def test_an_overlong_transaction_id_is_refused_not_stored(
    alice: User, approver: User, enroll: Callable[..., flows.DeviceOutcome]
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver, now=NOW)

    outcome = enroll(code, kind=RequestKind.SCEP, transaction_id="x" * 256, single_use_only=True)

    assert outcome.cause == RefusalCause.BAD_REQUEST
    assert "transaction ID" in outcome.reason
    assert flows.find_device_request(transaction_id="x" * 256, kind=RequestKind.SCEP) is None
    assert not EnrollmentRequest.objects.exists()
