"""The enrollment flow: the only place that changes a request's status.

submit -> SUBMITTED; approve -> APPROVED -> (issue) -> ISSUED or FAILED; reject -> REJECTED.

- :mod:`enroll.flows.submission`: CSR, SPKAC and renewal submissions (refusals store nothing);
- :mod:`enroll.flows.approval`: approving one request or many, and issuing their certificates;
- :mod:`enroll.flows.decisions`: rejecting a request; owners revoking their own certificates;
- :mod:`enroll.flows.devices`: enrollment codes and managed devices' requests (EST, SCEP);
- :mod:`enroll.flows.common`: the errors, the subject rule, the row lock, a lost database connection.

Every step runs in a transaction that holds the request's row lock (SELECT ... FOR UPDATE), so two
administrators approving at once yield one certificate. Approval follows the serial-reservation order
(:mod:`ca.services.reservations`): the serials are reserved and committed first, outside the step's
transaction; then, under the row lock, the request is APPROVED and issued in one transaction: it ends
ISSUED, or FAILED with the reason (its reservation discarded with that reason). If the process or the
database connection dies inside that transaction, it rolls back: the request is still SUBMITTED and can
be approved again, and the reservation, which may stand for a signed certificate that was never stored,
is reported until it is revoked by serial.

Each step writes its audit entry in the same transaction, and queues the owner's e-mail about a decision
with ``transaction.on_commit`` (so nobody hears about a decision that was rolled back).

Keys: a blocked key (:class:`ca.models.BlockedKey`: revoked for key compromise, or blocked by an
operator) is refused in any request and again at issuance, and so is a key certified for another account
(:func:`ca.services.issuance.key_refusals`).

Renewal: a new request linked to a certificate (``renewal_of``); the subject comes from the account as
always, the certificate gets a new serial. With ``settings.ENROLL_AUTO_APPROVE_RENEWALS`` a renewal by
the owner of a still-valid, unrevoked certificate is approved as soon as it is stored (``decided_by`` None).

Callers use the names below (``from enroll import flows``; ``flows.approve(...)``).
"""

from __future__ import annotations

from enroll.flows.approval import BULK_CHUNK, ApprovalOutcome, ApprovalResult, approve, approve_many
from enroll.flows.common import (
    AUTO_APPROVED_RENEWAL,
    DATABASE_LOST,
    FlowError,
    SigningUnavailable,
    SubmissionRefused,
    subject_for,
)
from enroll.flows.decisions import SELF_REVOCATION_REASONS, reject, revoke_own_certificate
from enroll.flows.devices import (
    DeviceOutcome,
    DeviceOutcomeKind,
    RefusalCause,
    create_enrollment_code,
    enroll_with_code,
    find_device_request,
    reenroll,
    revoke_enrollment_code,
)
from enroll.flows.submission import (
    EMAIL_NOT_VERIFIED,
    renewal_blocker,
    submission_blocker,
    submit_csr,
    submit_renewal,
    submit_spkac,
)

__all__ = [
    "AUTO_APPROVED_RENEWAL",
    "BULK_CHUNK",
    "DATABASE_LOST",
    "EMAIL_NOT_VERIFIED",
    "SELF_REVOCATION_REASONS",
    "ApprovalOutcome",
    "ApprovalResult",
    "DeviceOutcome",
    "DeviceOutcomeKind",
    "FlowError",
    "RefusalCause",
    "SigningUnavailable",
    "SubmissionRefused",
    "approve",
    "approve_many",
    "create_enrollment_code",
    "enroll_with_code",
    "find_device_request",
    "reenroll",
    "reject",
    "renewal_blocker",
    "revoke_enrollment_code",
    "revoke_own_certificate",
    "subject_for",
    "submission_blocker",
    "submit_csr",
    "submit_renewal",
    "submit_spkac",
]
