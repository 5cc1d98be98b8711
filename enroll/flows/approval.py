"""Approving requests, one or many: APPROVED, then issued (ISSUED) or FAILED with the reason."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from django.db import connections, router, transaction

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, KeyUnavailable
from ca.models import AuditEvent, Certificate, CertificateAuthority, SerialReservation
from ca.pki.profiles import SubjectInfo
from ca.services import authorisations, issuance, reservations
from ca.types import Account
from enroll import notifications
from enroll.flows.common import (
    CONNECTION_LOST,
    DATABASE_LOST,
    FlowError,
    SigningUnavailable,
    drop_broken_connections,
    internal_error,
    lock_request,
    subject_for,
)
from enroll.models import EnrollmentRequest, RequestStatus

logger = logging.getLogger(__name__)


def approve(
    *, request_id: int, by: Account | None = None, now: dt.datetime | None = None, reason: str = ""
) -> EnrollmentRequest:
    """Approve a SUBMITTED request and issue its certificate; ends ISSUED or FAILED (with the reason).

    ``by`` is the approving administrator (None for the operator's command line and auto-approved
    renewals, whose ``reason`` says so). Nobody approves a request of their own. The serial is reserved
    (committed) before the step's transaction, so this must not run inside another transaction. If the
    database connection breaks on the way, everything rolls back and a :class:`FlowError` says so: the
    request is still SUBMITTED, never half-issued.
    """
    now = now or utcnow()
    pending = EnrollmentRequest.objects.filter(pk=request_id).first()
    if (refusal := _approval_refusal(request_id, pending, by=by)) is not None:
        raise FlowError(refusal)  # checked again under the lock; no serial is spent on a refusal
    issuing = _reserve([request_id], now=now, ca=pending.issuing_ca if pending is not None else None, by=by)
    try:
        if pending is not None and isinstance(issuing, _Issuing):
            issuing = replace(issuing, reserved=prepare(issuing.reserved, requests=[pending]))
        with transaction.atomic():
            request = lock_request(request_id)
            if (refusal := _approval_refusal(request_id, request, by=by)) is not None:
                raise FlowError(refusal)
            _approve_locked(request, by=by, now=now, reason=reason, issuing=issuing)
    except FlowError as exc:
        _discard(issuing, reason=str(exc), now=now)
        raise
    except KeyUnavailable as exc:  # the token or the signer went away meanwhile: nothing changed
        raise key_unavailable(exc, now=now) from exc
    except CONNECTION_LOST as exc:
        drop_broken_connections()
        raise FlowError(f"Request #{request_id} was not decided: {DATABASE_LOST}") from exc
    return request


def reserve_serial(
    *,
    purpose: str,
    ca: CertificateAuthority | None,
    now: dt.datetime,
    request_sha256: str,
    spki_sha256: str,
    owner: Account,
    by: Account | None,
) -> issuance.Reserved | str:
    """Reserve (and commit) one serial on ``ca`` (None: the default CA) for a request about to be stored
    and approved at once (:func:`approve_new`), with ``by``'s issuance authorisation for the request's key;
    or why none could be, the request's reason to fail. Raises :class:`FlowError` when the signer is
    configured and not running, or the CA key cannot sign at all (token missing, wrong PIN): nothing is
    reserved, nothing may be stored."""
    _signer_ready()
    approval = authorisations.Approval(by, [authorisations.Approved(request_sha256, spki_sha256, owner.pk)])
    try:
        return issuance.reserve(purposes=[purpose], ca=ca, now=now, approval=approval)
    except KeyUnavailable as exc:
        raise SigningUnavailable(str(exc)) from exc
    except CAError as exc:
        return str(exc)


def _signer_ready() -> None:
    """Raise :class:`FlowError` (:class:`SigningUnavailable` when it is not running) unless the signer,
    where the portal signs through one, answers: before any serial is reserved."""
    try:
        authorisations.signer_ready()
    except CAError as exc:
        raise (SigningUnavailable if isinstance(exc, KeyUnavailable) else FlowError)(str(exc)) from exc


def prepare(
    reserved: issuance.Reserved,
    *,
    requests: Sequence[EnrollmentRequest],
    subjects: dict[int, SubjectInfo] | None = None,
) -> issuance.Reserved:
    """Before the step's transaction, so outside its locks: re-check, draft and lint the certificate of each
    of ``requests`` (as read before the lock, or about to be stored) with the serial reserved for it, in
    order (:func:`ca.services.issuance.prepare`). Issuing inside the transaction uses that work for each
    request that is still the same (request, owner, subject) and checks everything else again.
    ``subjects``: the owners' subjects where the caller has built them, by owner id."""
    subjects = dict(subjects or {})
    for request in requests:
        if request.owner_id not in subjects:
            subjects[request.owner_id] = subject_for(request.owner)
    orders = [_order(request, subject=subjects[request.owner_id]) for request in requests]
    return issuance.prepare(orders=orders, reserved=reserved)


def _order(request: EnrollmentRequest, *, subject: SubjectInfo) -> issuance.IssueOrder:
    """What the CA is asked to issue for ``request``: its stored request, the owner's subject."""
    return issuance.IssueOrder(
        request_der=bytes(request.request_der),
        subject=subject,
        owner=request.owner,
        kind=request.request_format,
        profile_name=request.profile,
        device_name=request.device_name,
    )


def key_unavailable(exc: KeyUnavailable, *, now: dt.datetime) -> SigningUnavailable:
    """The CA key could not sign at all while issuing (token missing, wrong PIN, the signer stopped), so the
    step's transaction rolled back: release the serials no CA signature carries, and say so as the
    signer-down case says it (the caller raises the :class:`FlowError`; every request is as it was)."""
    unused = [r for r in exc.unused if isinstance(r, SerialReservation)]
    with transaction.atomic():
        reservations.discard(reservations=unused, reason=str(exc), now=now)
    return SigningUnavailable(str(exc))


def discard_serial(reserved: issuance.Reserved | str, *, reason: str, now: dt.datetime) -> None:
    """The request :func:`reserve_serial` was for was refused or rolled back: its serial was never used."""
    if isinstance(reserved, issuance.Reserved):
        with transaction.atomic():
            reservations.discard(reservations=reserved.reservations, reason=reason, now=now)


def approve_new(
    request: EnrollmentRequest,
    *,
    reserved: issuance.Reserved | str,
    by: Account | None,
    reason: str,
    now: dt.datetime,
    subject: SubjectInfo | None = None,
) -> None:
    """Approve and issue a request stored in the caller's transaction (so nobody else can see or decide it
    yet), with the serial :func:`reserve_serial` committed for it: APPROVED, then ISSUED or FAILED, as
    :func:`approve` does. ``subject`` is the owner's, when the caller has just built it. Raises
    :class:`FlowError` when ``by`` may not approve it (their own request)."""
    if (refusal := _approval_refusal(request.pk, request, by=by)) is not None:
        raise FlowError(refusal)
    issuing = (
        reserved if isinstance(reserved, str) else _Issuing(reserved, {request.pk: reserved.reservations[0]})
    )
    _approve_locked(request, by=by, now=now, reason=reason, issuing=issuing, subject=subject)


@dataclass(frozen=True, slots=True)
class _Issuing:
    """The serials reserved (committed) for an approval, by request id."""

    reserved: issuance.Reserved
    by_request: dict[int, SerialReservation]


def _reserve(
    request_ids: Sequence[int],
    *,
    now: dt.datetime,
    ca: CertificateAuthority | None = None,
    by: Account | None = None,
) -> _Issuing | str:
    """Reserve (and commit) one serial per request on ``ca`` (None: the default CA) and ``by``'s issuance
    authorisation for each (:mod:`ca.services.authorisations`, what the signer checks); or why none could
    be reserved, which becomes each request's reason to fail once it is approved. Raises
    :class:`FlowError` when the signer is configured and not running, or the CA key cannot sign at all
    (token missing, wrong PIN): nothing is reserved then, and no request may change."""
    if not request_ids:
        return "nothing to issue"
    facts = {
        pk: authorisations.Approved(request_sha256, spki_sha256, owner_id)
        for pk, request_sha256, spki_sha256, owner_id in EnrollmentRequest.objects.filter(
            pk__in=request_ids
        ).values_list("pk", "request_sha256", "spki_sha256", "owner_id")
    }
    request_ids = [pk for pk in request_ids if pk in facts]  # a request deleted meanwhile gets no serial
    if not request_ids:
        return "nothing to issue"
    _signer_ready()
    approval = authorisations.Approval(by, [facts[pk] for pk in request_ids])
    try:
        reserved = issuance.reserve(
            purposes=[f"request #{pk}" for pk in request_ids], ca=ca, now=now, approval=approval
        )
    except KeyUnavailable as exc:
        raise SigningUnavailable(str(exc)) from exc
    except CAError as exc:
        return str(exc)
    return _Issuing(reserved, dict(zip(request_ids, reserved.reservations, strict=True)))


def _discard(issuing: _Issuing | str, *, reason: str, now: dt.datetime) -> None:
    """The step was refused or rolled back before signing: its serials were never used."""
    if isinstance(issuing, _Issuing):
        with transaction.atomic():
            reservations.discard(reservations=issuing.reserved.reservations, reason=reason, now=now)


def _approval_refusal(
    request_id: int, request: EnrollmentRequest | None, *, by: Account | None
) -> str | None:
    """Why ``request`` (locked; None if there is no such request) cannot be approved by ``by``, or None."""
    if request is None:
        return f"There is no request #{request_id}."
    if request.status != RequestStatus.SUBMITTED:
        return (
            f"Request #{request.pk} is {request.get_status_display().lower()}; only "
            "submitted requests can be approved."
        )
    if by is not None and by.pk == request.owner_id:
        return "Nobody may approve their own request; ask another administrator."
    return None


def _approve_locked(
    request: EnrollmentRequest,
    *,
    by: Account | None,
    now: dt.datetime,
    reason: str,
    issuing: _Issuing | str,
    subject: SubjectInfo | None = None,
) -> None:
    """APPROVED, then issue (ISSUED or FAILED); the caller holds the row lock inside a transaction.
    ``subject`` is the owner's, when the caller has it (else built here). The decision is written once,
    with the outcome (:func:`_issue`): nobody sees the row between the two in this transaction."""
    request.status = RequestStatus.APPROVED
    request.decided_by = by
    request.decided_at = now
    if reason:
        request.reason = reason
    audit.record(
        event=AuditEvent.REQUEST_APPROVED,
        actor=by,
        subject_user=request.owner,
        request_sha256=request.request_sha256,
        detail=f"request #{request.pk}" + (f", {reason}" if reason else ""),
        now=now,
    )
    _issue(request, issuing=issuing, now=now, subject=subject)
    request_id = request.pk
    notifications.decision_on_commit(request_id=request_id)


def _issue(
    request: EnrollmentRequest,
    *,
    issuing: _Issuing | str,
    now: dt.datetime,
    subject: SubjectInfo | None = None,
) -> None:
    """Sign the approved request with its reserved serial (inside the caller's transaction) and write the
    decision with its outcome (:data:`_DECISION_FIELDS`). Any failure ends FAILED."""
    subjects = {request.owner_id: subject or subject_for(request.owner)}
    (outcome,) = _issue_many([request], subjects=subjects, actor=request.decided_by, issuing=issuing, now=now)
    certificate = outcome if isinstance(outcome, Certificate) else None
    reason = outcome if isinstance(outcome, str) else ""
    if certificate is None:
        request.status = RequestStatus.FAILED
        request.reason = f"Issuing failed: {reason}"
        request.save(update_fields=_DECISION_FIELDS)
        audit.record(
            event=AuditEvent.REQUEST_FAILED,
            subject_user=request.owner,
            request_sha256=request.request_sha256,
            detail=f"request #{request.pk}: {request.reason}",
            now=now,
        )
        logger.warning("request #%s failed: %s", request.pk, reason)
        return
    request.status = RequestStatus.ISSUED
    request.certificate = certificate
    request.save(update_fields=_DECISION_FIELDS)


class ApprovalOutcome(StrEnum):
    """What :func:`approve_many` did with one request."""

    ISSUED = "issued"  # approved, certificate issued
    FAILED = "failed"  # approved, issuing failed: the request is FAILED with the reason
    REFUSED = "refused"  # not approved (no such request, decided, own request, database lost): unchanged


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    """One request of a bulk approval: its outcome, its certificate if issued, else the reason."""

    request_id: int
    outcome: ApprovalOutcome
    request: EnrollmentRequest | None = None
    certificate: Certificate | None = None
    reason: str = ""


#: Requests decided per transaction by :func:`approve_many` (their row locks are held that long).
BULK_CHUNK = 250


def approve_many(
    *, request_ids: Sequence[int], actor: Account, now: dt.datetime | None = None
) -> list[ApprovalResult]:
    """Approve many SUBMITTED requests and issue their certificates; one result per distinct id, in order.

    The rules of :func:`approve` hold for each request: it is row-locked, its own owner cannot approve it,
    only SUBMITTED requests are approved (others are REFUSED and left unchanged), and every approved request
    ends ISSUED or FAILED with the reason. Requests are decided :data:`BULK_CHUNK` at a time, each chunk in
    one transaction with bulk writes (:func:`ca.services.issue_many`, one prepared UPDATE, ``record_many``):
    one query per distinct owner, none per request. Each owner with a verified address hears of the
    decision once its chunk is committed.
    """
    now = now or utcnow()
    ids = list(dict.fromkeys(request_ids))
    results: dict[int, ApprovalResult] = {}
    # A device that named a CA other than the default one by its URL (rare): approved one at a time there.
    named_ca = set(
        EnrollmentRequest.objects.filter(pk__in=ids, issuing_ca__isnull=False).values_list("pk", flat=True)
    )
    for request_id in named_ca:
        results[request_id] = _approve_one(request_id, actor=actor, now=now)
    ids_bulk = [pk for pk in ids if pk not in named_ca]
    for start in range(0, len(ids_bulk), BULK_CHUNK):
        chunk = ids_bulk[start : start + BULK_CHUNK]
        pending = EnrollmentRequest.objects.filter(pk__in=chunk).select_related("owner").in_bulk()
        approvable = [pk for pk in chunk if _approval_refusal(pk, pending.get(pk), by=actor) is None]
        try:
            issuing = _reserve(approvable, now=now, by=actor)
        except FlowError as exc:  # the signer is not running: this chunk and the rest stay undecided
            for request_id in ids_bulk[start:]:
                results[request_id] = ApprovalResult(request_id, ApprovalOutcome.REFUSED, reason=str(exc))
            break
        try:
            if isinstance(issuing, _Issuing):  # drafted and linted before the chunk's rows are locked
                rows = [pending[pk] for pk in issuing.by_request]
                issuing = replace(issuing, reserved=prepare(issuing.reserved, requests=rows))
            with transaction.atomic():
                results.update(_approve_chunk(chunk, actor=actor, now=now, issuing=issuing))
        except KeyUnavailable as exc:  # the CA key went away meanwhile: this chunk and the rest undecided
            reason = str(key_unavailable(exc, now=now))
            for request_id in ids_bulk[start:]:
                results[request_id] = ApprovalResult(request_id, ApprovalOutcome.REFUSED, reason=reason)
            break
        except CONNECTION_LOST:
            logger.exception("bulk approval stopped: the database connection failed")
            drop_broken_connections()
            for request_id in ids_bulk[start:]:  # this chunk rolled back; later ones were not tried
                results[request_id] = ApprovalResult(
                    request_id, ApprovalOutcome.REFUSED, reason=f"Not decided: {DATABASE_LOST}"
                )
            break
    return [results[request_id] for request_id in ids]


def _approve_one(request_id: int, *, actor: Account, now: dt.datetime) -> ApprovalResult:
    """:func:`approve` as one result of :func:`approve_many`."""
    try:
        request = approve(request_id=request_id, by=actor, now=now)
    except FlowError as exc:
        return ApprovalResult(request_id, ApprovalOutcome.REFUSED, reason=str(exc))
    if request.status == RequestStatus.ISSUED:
        return ApprovalResult(
            request_id, ApprovalOutcome.ISSUED, request=request, certificate=request.certificate
        )
    return ApprovalResult(request_id, ApprovalOutcome.FAILED, request=request, reason=request.reason)


def _approve_chunk(
    ids: list[int], *, actor: Account, now: dt.datetime, issuing: _Issuing | str
) -> dict[int, ApprovalResult]:
    """Lock, approve and issue one chunk (inside the caller's transaction), with the serials reserved for
    the requests that were approvable before the lock (``issuing``)."""
    locked = {
        request.pk: request
        for request in EnrollmentRequest.objects.select_for_update()
        .select_related("owner")
        .filter(pk__in=ids)
        .order_by("pk")
    }
    results: dict[int, ApprovalResult] = {}
    approving: list[EnrollmentRequest] = []
    for request_id in ids:
        request = locked.get(request_id)
        if (refusal := _approval_refusal(request_id, request, by=actor)) is not None:
            results[request_id] = ApprovalResult(
                request_id, ApprovalOutcome.REFUSED, request=request, reason=refusal
            )
            continue
        assert request is not None
        request.status = RequestStatus.APPROVED
        request.decided_by = actor
        request.decided_at = now
        approving.append(request)
    if not approving:
        return results
    audit.record_many(
        [
            audit.AuditItem(
                event=AuditEvent.REQUEST_APPROVED,
                actor=actor,
                subject_user=request.owner,
                request_sha256=request.request_sha256,
                detail=f"request #{request.pk}",
            )
            for request in approving
        ],
        now=now,
    )
    subjects: dict[int, SubjectInfo] = {}
    for request in approving:
        if request.owner_id not in subjects:
            subjects[request.owner_id] = subject_for(request.owner)
    outcomes = _issue_many(approving, subjects=subjects, actor=actor, issuing=issuing, now=now)
    failures: list[audit.AuditItem] = []
    for request, outcome in zip(approving, outcomes, strict=True):
        if isinstance(outcome, Certificate):
            request.status = RequestStatus.ISSUED
            request.certificate = outcome
            results[request.pk] = ApprovalResult(
                request.pk, ApprovalOutcome.ISSUED, request=request, certificate=outcome
            )
        else:
            request.status = RequestStatus.FAILED
            request.reason = f"Issuing failed: {outcome}"
            results[request.pk] = ApprovalResult(
                request.pk, ApprovalOutcome.FAILED, request=request, reason=request.reason
            )
            failures.append(
                audit.AuditItem(
                    event=AuditEvent.REQUEST_FAILED,
                    subject_user=request.owner,
                    request_sha256=request.request_sha256,
                    detail=f"request #{request.pk}: {request.reason}",
                )
            )
            logger.warning("request #%s failed: %s", request.pk, outcome)
    _save_decisions(approving)
    audit.record_many(failures, now=now)
    # The decision e-mail goes to a verified address only (notify_decision checks that again on commit);
    # the subject just built says whether the owner has one, so owners without one cost no query.
    unheard = 0
    for request in approving:
        if subjects[request.owner_id].email is None:
            unheard += 1
            continue
        notifications.decision_on_commit(request_id=request.pk)
    if unheard:
        logger.info("%s decided requests: no verified e-mail address, their owners are not notified", unheard)
    return results


#: The fields a decision writes (:func:`_save_decisions`).
_DECISION_FIELDS = ("status", "decided_by", "decided_at", "reason", "certificate")


def _save_decisions(requests: list[EnrollmentRequest]) -> None:
    """Write the decision fields of ``requests`` with one prepared UPDATE run for each row.

    Django's ``bulk_update`` builds a CASE expression per field and row, which costs more than signing
    the certificates; ``executemany`` sends the same statement with each row's values (prepared for the
    database by each field, as ``save()`` does).
    """
    meta = EnrollmentRequest._meta
    connection = connections[router.db_for_write(EnrollmentRequest)]
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if field.name in _DECISION_FIELDS]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    rows = [
        [*(field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields), obj.pk]
        for obj in requests
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _issue_many(
    requests: list[EnrollmentRequest],
    *,
    subjects: dict[int, SubjectInfo],
    actor: Account | None,
    issuing: _Issuing | str,
    now: dt.datetime,
) -> list[Certificate | str]:
    """Issue for approved requests (inside the caller's transaction): per request a certificate or why not.

    ``issuing`` holds a reservation per request reserved for ("request #N"); those of requests not
    approved after all (decided by someone else meanwhile) are discarded here. A request without one
    (approvable only once locked) fails and can be submitted again.
    """
    if isinstance(issuing, str):
        return [issuing] * len(requests)
    by_request = issuing.by_request
    approved = {request.pk for request in requests}
    unused = [r for pk, r in by_request.items() if pk not in approved]
    reservations.discard(reservations=unused, reason="the request was decided meanwhile", now=now)
    outcomes: list[Certificate | str | None] = [None] * len(requests)
    orders: list[issuance.IssueOrder] = []
    reserved: list[SerialReservation] = []
    for index, request in enumerate(requests):
        if (reservation := by_request.get(request.pk)) is None:
            outcomes[index] = "No serial number was reserved for this request; submit it again."
            continue
        reserved.append(reservation)
        orders.append(_order(request, subject=subjects[request.owner_id]))
    batch = replace(issuing.reserved, reservations=reserved)
    try:
        with transaction.atomic():
            issued = issuance.issue(orders=orders, reserved=batch, actor=actor)
    except CONNECTION_LOST:
        raise  # nothing can be written any more; the caller rolls back and says so
    except KeyUnavailable:
        raise  # the CA key cannot sign at all: the caller rolls back and says so, nothing changes
    except Exception as exc:  # anything unexpected: every request ends FAILED, nothing is stored
        logger.exception("issuing %s requests failed", len(orders))
        failure = internal_error(exc)
        reservations.discard(reservations=reserved, reason=failure, now=now)
        issued = [failure] * len(orders)
    pending = iter(issued)
    return [outcome if outcome is not None else next(pending) for outcome in outcomes]
