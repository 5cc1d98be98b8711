"""The enrollment flow: the only module that changes a request's status.

submit -> SUBMITTED; approve -> APPROVED -> (issue) -> ISSUED or FAILED; reject -> REJECTED.
Every step runs in a transaction that holds the request's row lock (SELECT ... FOR UPDATE), so two
administrators approving at once yield one certificate. Approval and issuance commit together: a
request is never left APPROVED without an outcome; if anything fails after approval the request ends
FAILED with the reason (and nothing is signed), and if the process dies the whole step rolls back.

Each step writes its audit entry in the same transaction, and queues the owner's e-mail about a decision
with ``transaction.on_commit`` (so nobody hears about a decision that was rolled back).

Keys: a blocked key (:class:`ca.models.BlockedKey`: revoked for key compromise, or blocked by an
operator) is refused in any request and again at issuance, and so is a key certified for another account
(:func:`ca.services.key_refusals`).

Bulk approval (:func:`approve_many`): the same rules per request, many requests per transaction, one
bulk insert of the signed certificates and bulk audit entries.

Renewal: a new request linked to a certificate (``renewal_of``); the subject comes from the account as
always, the certificate gets a new serial. With ``settings.ENROLL_AUTO_APPROVE_RENEWALS`` a renewal by
the owner of a still-valid, unrevoked certificate is approved at once (``decided_by`` None).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, router, transaction

from accounts.services import verified_email
from ca import audit
from ca.clock import utcnow
from ca.errors import CAError
from ca.models import AuditEvent, Certificate, Revocation, RevocationReason
from ca.pki.csr import ParsedRequest, parse_csr
from ca.pki.errors import RequestRefused
from ca.pki.profiles import SubjectInfo
from ca.pki.spkac import ParsedSpkac, parse_spkac
from ca.services.issuance import IssueOrder, issue_certificate, issue_many, key_refusal
from ca.services.revocation import revoke_certificate
from ca.types import Account
from enroll import challenges, notifications
from enroll.models import RENEWING_STATUSES, EnrollmentRequest, RequestKind, RequestStatus

logger = logging.getLogger(__name__)

#: The reason recorded on a renewal the flow approved by itself.
AUTO_APPROVED_RENEWAL = "auto-approved renewal"

#: The revocation reasons owners may pick for their own certificates.
SELF_REVOCATION_REASONS = (
    RevocationReason.KEY_COMPROMISE,
    RevocationReason.SUPERSEDED,
    RevocationReason.CESSATION_OF_OPERATION,
)


class FlowError(Exception):
    """A step is not allowed in the request's current state; the message says why."""


class SubmissionRefused(FlowError):
    """The portal's rules refuse a submission (unverified address, compromised key, renewal rules).

    The PKI core's own refusals (bad CSR, weak key, ...) stay :class:`RequestRefused`. Nothing is stored.
    """


EMAIL_NOT_VERIFIED = (
    "Verify your e-mail address first: certificates carry it, so the portal only takes requests from "
    "accounts with a verified address. Open the link in the e-mail we sent you, or ask for a new one on "
    "your profile page."
)


def submission_blocker(owner: Account) -> str | None:
    """Why ``owner`` cannot submit requests in the portal right now, or None if they can."""
    if verified_email(owner) is None:
        return EMAIL_NOT_VERIFIED
    return None


def renewal_blocker(certificate: Certificate) -> str | None:
    """Why ``certificate`` cannot be renewed now (a renewal is pending or done), or None."""
    renewal = certificate.renewals.filter(status__in=RENEWING_STATUSES).order_by("-created_at").first()
    if renewal is None:
        return None
    if renewal.status == RequestStatus.ISSUED:
        return (
            f"This certificate was renewed already (request #{renewal.pk}). Renew the new certificate "
            "instead when its time comes."
        )
    return (
        f"A renewal of this certificate is waiting for a decision (request #{renewal.pk}). "
        "You will get an e-mail when it is decided."
    )


def submit_csr(
    *,
    owner: Account,
    data: bytes | str,
    now: dt.datetime | None = None,
    renewal_of: Certificate | None = None,
    require_verified_email: bool = False,
) -> EnrollmentRequest:
    """Check a CSR and store it as a new SUBMITTED request.

    Raises RequestRefused (the PKI core's checks) or SubmissionRefused (the portal's rules); stores nothing
    then. The portal passes ``require_verified_email=True``; the operator's command line may submit for
    any account. ``renewal_of`` makes the request a renewal of one of the owner's certificates (see
    :func:`submit_renewal`).
    """
    now = now or utcnow()
    if require_verified_email and (blocker := submission_blocker(owner)) is not None:
        raise SubmissionRefused(blocker)
    parsed = parse_csr(data=data)
    with transaction.atomic():
        if renewal_of is not None:
            renewal_of = _lock_renewable(renewal_of, owner=owner)
        request = _store(
            owner=owner,
            kind=RequestKind.CSR,
            parsed=parsed,
            requested_subject=parsed.requested_subject[:1024],
            renewal_of=renewal_of,
            notes=[f"renewal of {renewal_of.serial}"] if renewal_of is not None else [],
            now=now,
        )
        if renewal_of is not None and _auto_approves(renewal_of, now=now):
            _approve_locked(request, by=None, now=now, reason=AUTO_APPROVED_RENEWAL)
    return request


def submit_spkac(
    *,
    owner: Account,
    data: bytes | str,
    session_binding: str,
    now: dt.datetime | None = None,
    require_verified_email: bool = False,
) -> EnrollmentRequest:
    """Check an SPKAC, consume its challenge and store it as a new SUBMITTED request of kind SPKAC.

    ``session_binding`` is where the challenge must have been shown: the web session's token
    (:func:`enroll.challenges.session_binding`) or :data:`enroll.challenges.COMMAND_LINE_BINDING`.
    MD5 signatures pass only with ``settings.ENROLL_SPKAC_ALLOW_MD5``. Raises RequestRefused (the
    SPKAC), :class:`enroll.challenges.ChallengeRefused` (its challenge) or SubmissionRefused (the
    portal's rules); stores nothing then, and a challenge that was not itself refused stays unused.
    """
    now = now or utcnow()
    if require_verified_email and (blocker := submission_blocker(owner)) is not None:
        raise SubmissionRefused(blocker)
    parsed = parse_spkac(data=data, allow_md5=bool(settings.ENROLL_SPKAC_ALLOW_MD5))
    with transaction.atomic():
        challenges.consume(owner=owner, binding=session_binding, value=parsed.challenge, now=now)
        return _store(
            owner=owner,
            kind=RequestKind.SPKAC,
            parsed=parsed,
            requested_subject="",  # an SPKAC names no subject
            notes=["MD5-signed (legacy setting)"] if parsed.signature_hash == "md5" else [],
            now=now,
        )


def _store(
    *,
    owner: Account,
    kind: RequestKind,
    parsed: ParsedRequest | ParsedSpkac,
    requested_subject: str,
    notes: list[str],
    now: dt.datetime,
    renewal_of: Certificate | None = None,
) -> EnrollmentRequest:
    """Refuse a blocked key or another account's key, else store the request as SUBMITTED (audited).

    Runs inside the caller's transaction; ``notes`` go into the audit entry's detail.
    """
    if (refusal := key_refusal(spki_sha256=parsed.key.spki_sha256, owner=owner)) is not None:
        raise SubmissionRefused(refusal)
    request = EnrollmentRequest.objects.create(
        owner=owner,
        kind=kind,
        request_der=parsed.der,
        request_sha256=parsed.sha256,
        key_description=parsed.key.description,
        spki_sha256=parsed.key.spki_sha256,
        requested_subject=requested_subject,
        created_at=now,
        renewal_of=renewal_of,
    )
    label = ["SPKAC"] if kind == RequestKind.SPKAC else []
    audit.record(
        event=AuditEvent.REQUEST_SUBMITTED,
        actor=owner,
        subject_user=owner,
        request_sha256=request.request_sha256,
        serial=renewal_of.serial if renewal_of is not None else "",
        detail=", ".join([f"request #{request.pk}", *label, request.key_description, *notes]),
        now=now,
    )
    return request


def submit_renewal(
    *, owner: Account, certificate: Certificate, data: bytes | str, now: dt.datetime | None = None
) -> EnrollmentRequest:
    """Submit a CSR that renews ``certificate`` (the owner's own, with a verified address).

    The same key may be used again unless it was blocked (revoked for key compromise). With
    ``settings.ENROLL_AUTO_APPROVE_RENEWALS`` the request is approved and issued at once when the
    certificate is still valid and not revoked; the returned request is then ISSUED (or FAILED).
    """
    return submit_csr(owner=owner, data=data, now=now, renewal_of=certificate, require_verified_email=True)


def _lock_renewable(certificate: Certificate, *, owner: Account) -> Certificate:
    """Lock the certificate row (two renewals at once give one) and check it can be renewed by ``owner``."""
    locked = (
        Certificate.objects.select_for_update()
        .select_related("ca")
        .filter(pk=certificate.pk, owner=owner)
        .exclude(der=b"")
        .first()
    )
    if locked is None:
        raise SubmissionRefused("Only the owner of a certificate can renew it.")
    if (blocker := renewal_blocker(locked)) is not None:
        raise SubmissionRefused(blocker)
    return locked


def _auto_approves(certificate: Certificate, *, now: dt.datetime) -> bool:
    """Whether a renewal of ``certificate`` (checked by :func:`_lock_renewable`) is approved at once."""
    return (
        bool(settings.ENROLL_AUTO_APPROVE_RENEWALS)
        and not Revocation.objects.filter(certificate=certificate).exists()
        and certificate.not_before <= now < certificate.not_after
    )


def subject_for(owner: Account) -> SubjectInfo:
    """The certificate subject comes from the account, never from the request."""
    return SubjectInfo(
        common_name=owner.get_username(),
        organization=settings.ENROLL_ORGANIZATION or None,
        email=verified_email(owner),
    )


def _lock(request_id: int) -> EnrollmentRequest:
    try:
        return EnrollmentRequest.objects.select_for_update().select_related("owner").get(pk=request_id)
    except EnrollmentRequest.DoesNotExist:
        raise FlowError(f"There is no request #{request_id}.") from None


def approve(
    *, request_id: int, by: Account | None = None, now: dt.datetime | None = None
) -> EnrollmentRequest:
    """Approve a SUBMITTED request and issue its certificate; ends ISSUED or FAILED (with the reason).

    ``by`` is the approving administrator (None for the operator's command line). Nobody approves a
    request of their own. If the database connection breaks on the way, everything rolls back and a
    :class:`FlowError` says so: the request is still SUBMITTED, never half-issued.
    """
    now = now or utcnow()
    try:
        with transaction.atomic():
            request = _lock(request_id)
            if (refusal := _approval_refusal(request_id, request, by=by)) is not None:
                raise FlowError(refusal)
            _approve_locked(request, by=by, now=now)
    except CONNECTION_LOST as exc:
        _drop_broken_connections()
        raise FlowError(f"Request #{request_id} was not decided: {DATABASE_LOST}") from exc
    return request


#: The database connection broke (server restarted, connection killed, network): the transaction is gone
#: with everything it wrote, so the request is still SUBMITTED and can be approved again.
CONNECTION_LOST = (OperationalError, InterfaceError)

DATABASE_LOST = (
    "the database connection failed, so nothing was approved or issued and the request is still waiting. "
    "Try again; if it keeps failing, check that the database server is running."
)


def _drop_broken_connections() -> None:
    """Close connections the failure left unusable, so the rest of this web request reconnects.

    Django does this itself at the start and end of every request; doing it here lets the admin page that
    reports the failure still load its session and messages.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


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
    request: EnrollmentRequest, *, by: Account | None, now: dt.datetime, reason: str = ""
) -> None:
    """APPROVED, then issue (ISSUED or FAILED); the caller holds the row lock inside a transaction."""
    request.status = RequestStatus.APPROVED
    request.decided_by = by
    request.decided_at = now
    update_fields = ["status", "decided_by", "decided_at"]
    if reason:
        request.reason = reason
        update_fields.append("reason")
    request.save(update_fields=update_fields)
    audit.record(
        event=AuditEvent.REQUEST_APPROVED,
        actor=by,
        subject_user=request.owner,
        request_sha256=request.request_sha256,
        detail=f"request #{request.pk}" + (f", {reason}" if reason else ""),
        now=now,
    )
    _issue(request, now=now)
    request_id = request.pk
    transaction.on_commit(lambda: notifications.notify_decision(request_id=request_id), robust=True)


def _issue(request: EnrollmentRequest, *, now: dt.datetime) -> None:
    """Sign the approved request (inside the caller's transaction). Any failure ends FAILED."""
    certificate: Certificate | None = None
    reason = ""
    try:
        with transaction.atomic():
            certificate = issue_certificate(
                request_der=bytes(request.request_der),
                subject=subject_for(request.owner),
                owner=request.owner,
                profile_name=request.profile,
                now=now,
                actor=request.decided_by,
                kind=str(request.kind),
            )
    except (RequestRefused, CAError) as exc:
        reason = str(exc)
    except CONNECTION_LOST:
        raise  # nothing can be written any more; approve() rolls back and says so
    except Exception as exc:  # anything else after approval must still end FAILED, never stuck
        logger.exception("issuing request #%s failed", request.pk)
        reason = _internal_error(exc)
    if certificate is None:
        request.status = RequestStatus.FAILED
        request.reason = f"Issuing failed: {reason}"
        request.save(update_fields=["status", "reason"])
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
    request.save(update_fields=["status", "certificate"])


def _internal_error(exc: Exception) -> str:
    return f"Internal error while signing ({type(exc).__name__}); the operator has the details in the log."


# --- bulk approval -----------------------------------------------------------------------------------


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
    for start in range(0, len(ids), BULK_CHUNK):
        try:
            with transaction.atomic():
                results.update(_approve_chunk(ids[start : start + BULK_CHUNK], actor=actor, now=now))
        except CONNECTION_LOST:
            logger.exception("bulk approval stopped: the database connection failed")
            _drop_broken_connections()
            for request_id in ids[start:]:  # this chunk rolled back; later ones were not tried
                results[request_id] = ApprovalResult(
                    request_id, ApprovalOutcome.REFUSED, reason=f"Not decided: {DATABASE_LOST}"
                )
            break
    return [results[request_id] for request_id in ids]


def _approve_chunk(ids: list[int], *, actor: Account, now: dt.datetime) -> dict[int, ApprovalResult]:
    """Lock, approve and issue one chunk (inside the caller's transaction)."""
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
    outcomes = _issue_many(approving, subjects=subjects, actor=actor, now=now)
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
        transaction.on_commit(partial(notifications.notify_decision, request_id=request.pk), robust=True)
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
    actor: Account,
    now: dt.datetime,
) -> list[Certificate | str]:
    """Issue for approved requests (inside the caller's transaction): per request a certificate or why not."""
    orders = [
        IssueOrder(
            request_der=bytes(request.request_der),
            subject=subjects[request.owner_id],
            owner=request.owner,
            kind=str(request.kind),
            profile_name=request.profile,
        )
        for request in requests
    ]
    try:
        with transaction.atomic():
            return issue_many(orders=orders, actor=actor, now=now)
    except CONNECTION_LOST:
        raise  # nothing can be written any more; approve_many() rolls the chunk back and says so
    except Exception as exc:  # anything unexpected: every request ends FAILED, nothing is stored
        logger.exception("issuing %s requests failed", len(requests))
        return [_internal_error(exc)] * len(requests)


def reject(
    *, request_id: int, reason: str, by: Account | None = None, now: dt.datetime | None = None
) -> EnrollmentRequest:
    """Reject a SUBMITTED request with a reason the owner will read."""
    reason = reason.strip()
    if not reason:
        raise FlowError("Give a reason for the rejection; the requester reads it.")
    with transaction.atomic():
        request = _lock(request_id)
        if request.status != RequestStatus.SUBMITTED:
            raise FlowError(
                f"Request #{request.pk} is {request.get_status_display().lower()}; only "
                "submitted requests can be rejected."
            )
        request.status = RequestStatus.REJECTED
        request.reason = reason
        request.decided_by = by
        request.decided_at = now or utcnow()
        request.save(update_fields=["status", "reason", "decided_by", "decided_at"])
        audit.record(
            event=AuditEvent.REQUEST_REJECTED,
            actor=by,
            subject_user=request.owner,
            request_sha256=request.request_sha256,
            detail=f"request #{request.pk}: {reason}",
            now=request.decided_at,
        )
        request_id = request.pk
        transaction.on_commit(lambda: notifications.notify_decision(request_id=request_id), robust=True)
    return request


# --- the owner's own certificates ------------------------------------------------------------------


def revoke_own_certificate(
    *,
    owner: Account,
    certificate: Certificate,
    reason: RevocationReason,
    invalidity_date: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Revocation:
    """Revoke one of ``owner``'s certificates with a reason owners may give; the CRL follows on commit.

    Raises FlowError for someone else's certificate or a reason owners cannot pick, and
    :class:`ca.services.CAError` (AlreadyRevoked, a future invalidity date, CrlNotPublished after the
    revocation committed) from the CA service.
    """
    if certificate.owner_id != owner.pk:
        raise FlowError("Only the owner of a certificate can revoke it here.")
    if reason not in SELF_REVOCATION_REASONS:
        raise FlowError("Pick one of the reasons offered: key compromise, superseded or no longer needed.")
    if invalidity_date is not None and reason != RevocationReason.KEY_COMPROMISE:
        raise FlowError("A date of compromise only goes with the reason key compromise.")
    return revoke_certificate(
        certificate=certificate, reason=reason, by=owner, invalidity_date=invalidity_date, now=now
    )
