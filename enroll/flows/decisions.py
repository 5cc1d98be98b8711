"""Rejecting a request, and owners revoking their own certificates."""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.utils.translation import gettext

from ca import audit
from ca.clock import utcnow
from ca.models import AuditEvent, Certificate, Revocation, RevocationReason
from ca.services.revocation import revoke_certificate
from ca.types import Account
from enroll import notifications
from enroll.flows.common import (
    FlowError,
    lock_request,
)
from enroll.models import EnrollmentRequest, RequestStatus

logger = logging.getLogger(__name__)


#: The revocation reasons owners may pick for their own certificates.
SELF_REVOCATION_REASONS = (
    RevocationReason.KEY_COMPROMISE,
    RevocationReason.SUPERSEDED,
    RevocationReason.CESSATION_OF_OPERATION,
)


def reject(
    *, request_id: int, reason: str, by: Account | None = None, now: dt.datetime | None = None
) -> EnrollmentRequest:
    """Reject a SUBMITTED request with a reason the owner will read."""
    reason = reason.strip()
    if not reason:
        raise FlowError("Give a reason for the rejection; the requester reads it.")
    with transaction.atomic():
        request = lock_request(request_id)
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
        notifications.decision_on_commit(request_id=request_id)
    return request


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
        raise FlowError(gettext("Only the owner of a certificate can revoke it here."))
    if reason not in SELF_REVOCATION_REASONS:
        raise FlowError(
            gettext("Pick one of the reasons offered: key compromise, superseded or no longer needed.")
        )
    if invalidity_date is not None and reason != RevocationReason.KEY_COMPROMISE:
        raise FlowError("A date of compromise only goes with the reason key compromise.")
    return revoke_certificate(
        certificate=certificate, reason=reason, by=owner, invalidity_date=invalidity_date, now=now
    )
