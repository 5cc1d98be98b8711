"""What every step of the flow shares: its errors, the subject rule, the row lock, a lost database."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

from accounts.services import verified_email
from ca.pki.profiles import SubjectInfo
from ca.types import Account
from enroll.models import EnrollmentRequest

logger = logging.getLogger(__name__)


#: The reason recorded on a renewal the flow approved by itself.
AUTO_APPROVED_RENEWAL = "auto-approved renewal"


class FlowError(Exception):
    """A step is not allowed in the request's current state; the message says why."""


class SigningUnavailable(FlowError):
    """The CA key cannot sign at all right now (the signer not running, the token missing, a wrong PIN):
    nothing changed, and the same step works once the operator fixed it
    (:class:`ca.errors.KeyUnavailable`)."""


class SubmissionRefused(FlowError):
    """The portal's rules refuse a submission (unverified address, compromised key, renewal rules).

    The PKI core's own refusals (bad CSR, weak key, ...) stay :class:`RequestRefused`. Nothing is stored.
    """


def subject_for(owner: Account) -> SubjectInfo:
    """The certificate subject comes from the account, never from the request."""
    return SubjectInfo(
        common_name=owner.get_username(),
        organization=settings.ENROLL_ORGANIZATION or None,
        email=verified_email(owner),
    )


def lock_request(request_id: int) -> EnrollmentRequest:
    try:
        return EnrollmentRequest.objects.select_for_update().select_related("owner").get(pk=request_id)
    except EnrollmentRequest.DoesNotExist:
        raise FlowError(f"There is no request #{request_id}.") from None


#: The database connection broke (server restarted, connection killed, network): the transaction is gone
#: with everything it wrote, so the request is still SUBMITTED and can be approved again.
CONNECTION_LOST = (OperationalError, InterfaceError)


DATABASE_LOST = (
    "the database connection failed, so nothing was approved or issued and the request is still waiting. "
    "Try again; if it keeps failing, check that the database server is running."
)


def drop_broken_connections() -> None:
    """Close connections the failure left unusable, so the rest of this web request reconnects.

    Django does this itself at the start and end of every request; doing it here lets the admin page that
    reports the failure still load its session and messages.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def internal_error(exc: Exception) -> str:
    return f"Internal error while signing ({type(exc).__name__}); the operator has the details in the log."
