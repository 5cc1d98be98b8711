"""The enrollment flow: the only module that changes a request's status.

submit -> SUBMITTED; approve -> APPROVED -> (issue) -> ISSUED or FAILED; reject -> REJECTED.
Every step runs in a transaction that holds the request's row lock (SELECT ... FOR UPDATE), so two
administrators approving at once yield one certificate. Approval and issuance commit together: a
request is never left APPROVED without an outcome; if anything fails after approval the request ends
FAILED with the reason (and nothing is signed), and if the process dies the whole step rolls back.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction

from accounts.services import verified_email
from ca import services as ca_services
from ca.clock import utcnow
from ca.models import Certificate
from ca.pki.csr import parse_csr
from ca.pki.errors import RequestRefused
from ca.pki.profiles import SubjectInfo
from ca.types import Account
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus

logger = logging.getLogger(__name__)


class FlowError(Exception):
    """A step is not allowed in the request's current state; the message says why."""


def submit_csr(*, owner: Account, data: bytes | str, now: dt.datetime | None = None) -> EnrollmentRequest:
    """Check a CSR and store it as a new SUBMITTED request. Raises RequestRefused; stores nothing then."""
    parsed = parse_csr(data=data)
    return EnrollmentRequest.objects.create(
        owner=owner,
        kind=RequestKind.CSR,
        request_der=parsed.der,
        request_sha256=parsed.sha256,
        key_description=parsed.key.description,
        spki_sha256=parsed.key.spki_sha256,
        requested_subject=parsed.requested_subject[:1024],
        created_at=now or utcnow(),
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
    request of their own.
    """
    now = now or utcnow()
    with transaction.atomic():
        request = _lock(request_id)
        if request.status != RequestStatus.SUBMITTED:
            raise FlowError(
                f"Request #{request.pk} is {request.get_status_display().lower()}; only "
                "submitted requests can be approved."
            )
        if by is not None and by.pk == request.owner_id:
            raise FlowError("Nobody may approve their own request; ask another administrator.")
        request.status = RequestStatus.APPROVED
        request.decided_by = by
        request.decided_at = now
        request.save(update_fields=["status", "decided_by", "decided_at"])
        _issue(request, now=now)
    return request


def _issue(request: EnrollmentRequest, *, now: dt.datetime) -> None:
    """Sign the approved request (inside the caller's transaction). Any failure ends FAILED."""
    certificate: Certificate | None = None
    reason = ""
    try:
        with transaction.atomic():
            if request.kind != RequestKind.CSR:
                raise FlowError(f"Requests of kind {request.kind} cannot be issued yet.")
            certificate = ca_services.issue_certificate(
                request_der=bytes(request.request_der),
                subject=subject_for(request.owner),
                owner=request.owner,
                profile_name=request.profile,
                now=now,
            )
    except (RequestRefused, ca_services.CAError, FlowError) as exc:
        reason = str(exc)
    except Exception as exc:  # anything else after approval must still end FAILED, never stuck
        logger.exception("issuing request #%s failed", request.pk)
        reason = (
            f"Internal error while signing ({type(exc).__name__}); the operator has the details in the log."
        )
    if certificate is None:
        request.status = RequestStatus.FAILED
        request.reason = f"Issuing failed: {reason}"
        request.save(update_fields=["status", "reason"])
        logger.warning("request #%s failed: %s", request.pk, reason)
        return
    request.status = RequestStatus.ISSUED
    request.certificate = certificate
    request.save(update_fields=["status", "certificate"])


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
    return request
