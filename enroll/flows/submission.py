"""Submitting requests: a CSR, an SPKAC (with its challenge), a renewal; a refusal stores nothing."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction

from accounts.services import verified_email
from ca import audit
from ca.clock import utcnow
from ca.models import AuditEvent, Certificate
from ca.pki.csr import ParsedRequest, parse_csr
from ca.pki.spkac import ParsedSpkac, parse_spkac
from ca.services.issuance import key_refusal
from ca.types import Account
from enroll import challenges
from enroll.flows.approval import approve
from enroll.flows.common import (
    AUTO_APPROVED_RENEWAL,
    SubmissionRefused,
)
from enroll.models import RENEWING_STATUSES, EnrollmentRequest, RequestKind, RequestStatus

logger = logging.getLogger(__name__)


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
    auto_approve = False
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
        auto_approve = renewal_of is not None and _auto_approves(renewal_of, now=now)
    if auto_approve:
        # Stored (committed) first: approval reserves its serial in a transaction of its own.
        return approve(request_id=request.pk, by=None, now=now, reason=AUTO_APPROVED_RENEWAL)
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
        Certificate.objects.issued()
        .select_for_update()
        .select_related("ca")
        .filter(pk=certificate.pk, owner=owner)
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
        and Certificate.objects.valid_at(now).filter(pk=certificate.pk).exists()
    )
