"""Managed devices: enrollment codes, and the requests devices send with them (EST, SCEP).

A device request is an :class:`~enroll.models.EnrollmentRequest` of kind EST or SCEP, stored by the
portal's own submission step (:func:`enroll.flows.submission.submit_csr`): the same parsing, key policy,
blocked keys, audit entries, approval queue and e-mails. The device's protocol view (EST, SCEP) maps the
:class:`DeviceOutcome` to its answer.

- :func:`create_enrollment_code`: a random code (192 bits) bound to an account and a device name, stored
  as its SHA-256 only and shown once. It is pre-approved (issued without the queue) only when an approver
  makes it for someone else's account: the requester never approves (the same rule as for requests).
- :func:`enroll_with_code`: a device's first request. A wrong, expired, revoked or used-up code is
  refused and counts toward a lock-out per client address and per code (``ENROLL_RATE_LIMITS
  ["device_code"]``). The same code with the same request again (EST: the same public key; SCEP: the same
  transactionID) is a poll: it answers with the first request's state, never a second request.
- :func:`reenroll`: a device renews with the certificate it proved holding (EST: the TLS client
  certificate the front server verified and forwarded; SCEP: a RenewalReq signed with it).
- :func:`find_device_request`: SCEP's CertPoll by transactionID.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django_ratelimit.core import get_usage

from accounts import ratelimits
from accounts.models import can_approve
from ca import audit
from ca.clock import utcnow
from ca.models import AuditEvent, Certificate, CertificateAuthority, clean_device_name
from ca.pki.csr import parse_csr
from ca.pki.errors import RequestRefused
from ca.types import Account
from enroll.flows.common import FlowError, SigningUnavailable, SubmissionRefused
from enroll.flows.decisions import reject
from enroll.flows.submission import DeviceOrigin, submit_csr
from enroll.models import (
    DEVICE_KINDS,
    CodeState,
    EnrollmentCode,
    EnrollmentRequest,
    RequestKind,
    RequestStatus,
    code_digest,
)

logger = logging.getLogger(__name__)

#: Random bytes in a code: 192 bits, 32 URL-safe characters (at least 128 bits are required).
CODE_BYTES = 24
#: The longest code a device may send; anything longer is a wrong code without a database lookup.
CODE_MAX_LENGTH = 128
#: The longest transaction ID stored (SCEP clients send 28 to 64 characters).
TRANSACTION_ID_MAX_LENGTH = 255
TRANSACTION_ID_TOO_LONG = f"The transaction ID is longer than {TRANSACTION_ID_MAX_LENGTH} characters."
#: The most uses and hours a code may be given.
MAX_USES = 10_000
MAX_HOURS = 24 * 90

WRONG_CODE = (
    "The enrollment code is not valid. Check that the device has the whole code, or ask for a new one on "
    "the portal's Enroll a device page."
)
CODE_WORDS = {
    CodeState.EXPIRED: (
        "This enrollment code has expired. Ask for a new one on the portal's Enroll a device page."
    ),
    CodeState.REVOKED: (
        "This enrollment code was revoked. Ask for a new one on the portal's Enroll a device page."
    ),
    CodeState.USED_UP: (
        "This enrollment code has been used already, as many times as it may be. Ask for a new one on the "
        "portal's Enroll a device page."
    ),
}
SCEP_SINGLE_USE = (
    "This enrollment code may be used {uses} times, but SCEP takes single-use codes only: SCEP carries the "
    "code in clear inside the stored request. Ask for a single-use code (the default)."
)
POLL_OTHER_KEY = (
    "This transaction ID belongs to a request for another key. Make a new key pair and a new request."
)
REENROLL_NOT_OURS = "This certificate was not issued by this portal, so it cannot be renewed here."
REENROLL_REVOKED = (
    "This certificate is revoked, so it cannot be renewed. Enroll the device again with a new code."
)
REENROLL_EXPIRED = (
    "This certificate has expired, so it cannot be renewed. Enroll the device again with a new code."
)
#: The reason recorded on a device's re-enrollment the flow approved by itself.
AUTO_APPROVED_DEVICE_RENEWAL = "auto-approved device re-enrollment"
REENROLL_NO_OWNER = "This certificate belongs to no account, so it cannot be renewed."


class DeviceOutcomeKind(StrEnum):
    ISSUED = "issued"
    PENDING = "pending"
    REFUSED = "refused"


class RefusalCause(StrEnum):
    """Why a device was refused, for its protocol's status code (EST: 400/401/403/429/503)."""

    NONE = ""
    BAD_CODE = "bad_code"  # no such code: EST 401
    CODE_UNUSABLE = "code_unusable"  # expired, revoked, used up, multi-use on SCEP: EST 403
    LOCKED_OUT = "locked_out"  # too many wrong codes: EST 429 + Retry-After
    BAD_REQUEST = "bad_request"  # the CSR (parsing, key policy): EST 400
    NOT_ALLOWED = "not_allowed"  # the portal's rules (blocked key, unverified address, renewal rules): 403
    REJECTED = "rejected"  # the request was rejected, or issuing failed: 403
    UNAVAILABLE = "unavailable"  # the CA or the database failed: 503


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    """What a device's request came to: issued (with the certificate), pending, or refused (why)."""

    kind: DeviceOutcomeKind
    request: EnrollmentRequest | None
    certificate: Certificate | None  # when ISSUED
    reason: str  # plain English, for the client's error text; "" when ISSUED
    retry_after: int = 0  # seconds, when PENDING (or LOCKED_OUT)
    cause: RefusalCause = RefusalCause.NONE


def _refused(reason: str, cause: RefusalCause, *, request: EnrollmentRequest | None = None,
             retry_after: int = 0) -> DeviceOutcome:  # fmt: skip
    return DeviceOutcome(DeviceOutcomeKind.REFUSED, request, None, reason, retry_after, cause)


# --- codes --------------------------------------------------------------------------------------------


def may_approve(user: Account | None) -> bool:
    """Whether ``user`` approves requests (None: the operator on the command line, who does)."""
    return user is None or can_approve(user)


def pre_approval_allowed(*, owner: Account, created_by: Account | None) -> bool:
    """An approver's code for someone else's account may be pre-approved; nobody pre-approves their own."""
    return may_approve(created_by) and (created_by is None or created_by.pk != owner.pk)


def create_enrollment_code(
    *,
    owner: Account,
    created_by: Account | None,
    device_name: str = "",
    pre_approve: bool | None = None,
    uses: int = 1,
    hours: float = 24,
    now: dt.datetime | None = None,
) -> tuple[EnrollmentCode, str]:
    """Make a code for ``owner``'s device: the stored row and the code, which is shown once and never stored.

    ``created_by`` None is the operator on the command line (an approver). ``pre_approve`` None means
    "pre-approved when allowed" (:func:`pre_approval_allowed`); True when it is not allowed is refused.
    Raises :class:`SubmissionRefused` saying what to change (a bad device name, uses or hours).
    """
    now = now or utcnow()
    try:
        name = clean_device_name(device_name)
    except ValidationError as exc:
        raise SubmissionRefused(" ".join(exc.messages)) from None
    if not 1 <= uses <= MAX_USES:
        raise SubmissionRefused(f"A code may be used from 1 to {MAX_USES} times.")
    if not 0 < hours <= MAX_HOURS:
        raise SubmissionRefused(f"A code may be valid for up to {MAX_HOURS} hours ({MAX_HOURS // 24} days).")
    allowed = pre_approval_allowed(owner=owner, created_by=created_by)
    if pre_approve and not allowed:
        raise SubmissionRefused(
            "Only an approver can make a pre-approved code, and only for someone else's account: nobody "
            "approves their own requests. Requests made with this code would wait for an approver."
        )
    pre_approved = allowed if pre_approve is None else bool(pre_approve)
    code = secrets.token_urlsafe(CODE_BYTES)
    with transaction.atomic():
        row = EnrollmentCode.objects.create(
            owner=owner,
            device_name=name,
            digest=code_digest(code),
            created_by=created_by,
            pre_approved=pre_approved,
            max_uses=uses,
            created_at=now,
            expires_at=now + dt.timedelta(hours=hours),
        )
        audit.record(
            event=AuditEvent.ENROLLMENT_CODE_CREATED,
            actor=created_by,
            subject_user=owner,
            detail=", ".join(
                [
                    f"code #{row.pk}",
                    *([f"device {name!r}"] if name else []),
                    "pre-approved" if pre_approved else "approval queue",
                    f"{uses} use{'s' if uses != 1 else ''}",
                    f"expires {row.expires_at:%Y-%m-%d %H:%M} UTC",
                ]
            ),
            now=now,
        )
    return row, code


def revoke_enrollment_code(
    *, code_id: int, actor: Account | None, now: dt.datetime | None = None
) -> EnrollmentCode:
    """Revoke a code (its owner, or an approver; ``actor`` None: the operator). Requests made with it that
    still wait for a decision are rejected. Revoking a revoked code changes nothing."""
    now = now or utcnow()
    with transaction.atomic():
        row = EnrollmentCode.objects.select_for_update().select_related("owner").filter(pk=code_id).first()
        if row is None:
            raise FlowError(f"There is no enrollment code #{code_id}.")
        if actor is not None and actor.pk != row.owner_id and not may_approve(actor):
            raise FlowError("Only the code's owner or an approver can revoke an enrollment code.")
        if row.revoked_at is not None:
            return row
        row.revoked_at = now
        row.revoked_by = actor
        row.save(update_fields=["revoked_at", "revoked_by"])
        audit.record(
            event=AuditEvent.ENROLLMENT_CODE_REVOKED,
            actor=actor,
            subject_user=row.owner,
            detail=f"code #{row.pk}" + (f", device {row.device_name!r}" if row.device_name else ""),
            now=now,
        )
        waiting = list(row.requests.filter(status=RequestStatus.SUBMITTED).values_list("pk", flat=True))
    for request_id in waiting:
        try:
            reject(request_id=request_id, by=actor, reason="its enrollment code was revoked", now=now)
        except FlowError:  # decided meanwhile
            logger.info("request #%s was decided before its code #%s was revoked", request_id, row.pk)
    return row


# --- enrolling ---------------------------------------------------------------------------------------


def enroll_with_code(
    *,
    code: str,
    csr_der: bytes,
    kind: RequestKind,
    client_address: str,
    transaction_id: str = "",
    single_use_only: bool = False,
    ca: CertificateAuthority | None = None,
    now: dt.datetime | None = None,
) -> DeviceOutcome:
    """A device's first request with an enrollment code (EST simpleenroll, SCEP PKCSReq).

    ``transaction_id`` is SCEP's transactionID; for EST it is left "" and becomes the SHA-256 of the
    request's public key. ``ca`` is the CA the device's URL named (None: the default CA). Never raises
    for anything the device sent: every refusal is a REFUSED outcome with a plain reason.
    """
    now = now or utcnow()
    if kind not in DEVICE_KINDS:
        raise ValueError(f"not a device request kind: {kind}")
    digest = code_digest(code) if 0 < len(code) <= CODE_MAX_LENGTH else ""
    if (locked := _locked_out(client_address=client_address, digest=digest)) is not None:
        return locked
    row = (
        EnrollmentCode.objects.select_related("owner", "created_by").filter(digest=digest).first()
        if digest
        else None
    )
    if row is None or not hmac.compare_digest(row.digest, digest):
        _count_wrong_code(client_address=client_address, digest=digest)
        return _refused(WRONG_CODE, RefusalCause.BAD_CODE)
    try:
        parsed = parse_csr(data=csr_der)
    except RequestRefused as exc:
        return _refused(exc.message, RefusalCause.BAD_REQUEST)
    if len(transaction_id) > TRANSACTION_ID_MAX_LENGTH:
        return _refused(TRANSACTION_ID_TOO_LONG, RefusalCause.BAD_REQUEST)
    transaction_id = transaction_id or parsed.key.spki_sha256
    polled = _poll(
        Q(enrollment_code=row), kind=kind, transaction_id=transaction_id, spki=parsed.key.spki_sha256
    )
    if polled is not None:
        return polled
    state = row.state(now)
    if state != CodeState.ACTIVE:
        _count_wrong_code(client_address=client_address, digest=digest)
        return _refused(CODE_WORDS[state], RefusalCause.CODE_UNUSABLE)
    if single_use_only and row.max_uses > 1:
        return _refused(SCEP_SINGLE_USE.format(uses=row.max_uses), RefusalCause.CODE_UNUSABLE)
    origin = DeviceOrigin(
        kind=kind,
        transaction_id=transaction_id,
        enrollment_code=row,
        issuing_ca=_explicit(ca),
        client_address=client_address,
        approve_by=row.created_by if row.pre_approved else None,
        pre_approved=row.pre_approved,
        approve_reason=f"pre-approved enrollment code #{row.pk}" if row.pre_approved else "",
        on_stored=lambda request: use_code(row=row, request=request, client_address=client_address, now=now),
        ca=ca,
    )
    try:
        request = submit_csr(
            owner=row.owner,
            data=parsed.der,
            parsed=parsed,
            now=now,
            require_verified_email=True,
            device_name=row.device_name,
            device=origin,
        )
    except RequestRefused as exc:
        return _refused(exc.message, RefusalCause.BAD_REQUEST)
    except RepeatedRequest:  # the same request, sent twice at once: the other one was stored first
        polled = _poll(
            Q(enrollment_code=row), kind=kind, transaction_id=transaction_id, spki=parsed.key.spki_sha256
        )
        return polled or _refused(CODE_WORDS[CodeState.USED_UP], RefusalCause.CODE_UNUSABLE)
    except CodeUsedUp as exc:
        return _refused(str(exc), RefusalCause.CODE_UNUSABLE)
    except SigningUnavailable as exc:  # the signer or the CA key is not there: nothing was stored
        return _refused(str(exc), RefusalCause.UNAVAILABLE)
    except FlowError as exc:  # SubmissionRefused, or approval's database failure
        return _refused(str(exc), RefusalCause.NOT_ALLOWED)
    return outcome_of(request)


class CodeUsedUp(FlowError):
    """The code was used up, revoked or expired between the check and the use; the message says which."""


class RepeatedRequest(FlowError):
    """The same request (code, kind, transaction ID) was stored by a concurrent call first."""


def _poll(where: Q, *, kind: RequestKind, transaction_id: str, spki: str) -> DeviceOutcome | None:
    """The outcome of the device's earlier request with this transaction ID (``where`` narrows it to the
    code, or to the renewed certificate), or None if there is none: a repeat is a poll."""
    found = (
        EnrollmentRequest.objects.filter(where, kind=kind, transaction_id=transaction_id)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if found is None:  # the usual case, told by a small query
        return None
    previous = EnrollmentRequest.objects.select_related("certificate").get(pk=found)
    if previous.spki_sha256 != spki:
        return _refused(POLL_OTHER_KEY, RefusalCause.BAD_REQUEST)
    return outcome_of(previous)


def use_code(
    *, row: EnrollmentCode, request: EnrollmentRequest, client_address: str, now: dt.datetime
) -> None:
    """Count one use of ``row`` for ``request`` (inside the caller's transaction), never past its limit.

    The code's row lock (taken by the counting UPDATE) makes concurrent uses of one code wait for each
    other: the second of two identical requests sent at once finds the first (:class:`RepeatedRequest`,
    and the caller answers it as a poll), and a code is never used more often than it may be
    (:class:`CodeUsedUp`).
    """
    # One UPDATE counts the use only while the code is usable, and holds its row until commit: a second
    # request with the same code waits here, then finds the first one stored or the code used up.
    counted = (
        EnrollmentCode.objects.filter(pk=row.pk, revoked_at__isnull=True, uses__lt=F("max_uses"),
                                      expires_at__gt=now)
        .update(uses=F("uses") + 1, last_used_at=now)
    )  # fmt: skip
    earlier = EnrollmentRequest.objects.filter(
        enrollment_code_id=row.pk, kind=request.kind, transaction_id=request.transaction_id
    ).exclude(pk=request.pk)
    if earlier.exists():
        raise RepeatedRequest(f"request #{request.pk} repeats an earlier one")
    if not counted:
        state = EnrollmentCode.objects.get(pk=row.pk).state(now)
        raise CodeUsedUp(CODE_WORDS.get(state, CODE_WORDS[CodeState.USED_UP]))
    audit.record(
        event=AuditEvent.ENROLLMENT_CODE_USED,
        actor=row.owner,
        subject_user=row.owner,
        request_sha256=request.request_sha256,
        detail=", ".join(
            [
                f"code #{row.pk}",
                f"request #{request.pk}",
                request.get_kind_display(),
                f"from {client_address}",
            ]
        ),
        now=now,
    )


def reenroll(
    *,
    certificate: Certificate,
    csr_der: bytes,
    kind: RequestKind,
    client_address: str,
    transaction_id: str = "",
    ca: CertificateAuthority | None = None,
    now: dt.datetime | None = None,
) -> DeviceOutcome:
    """A device renews ``certificate``, which it proved holding (EST: TLS client certificate; SCEP:
    RenewalReq signed with it). Same subject (from the account), new or same key. Refused if the
    certificate is revoked, expired, or not this portal's. Approved at once when
    ``settings.ENROLL_AUTO_APPROVE_DEVICE_RENEWALS`` (or the portal's ``ENROLL_AUTO_APPROVE_RENEWALS``)
    holds, else it waits in the queue; a repeat (same key, or SCEP's transactionID) is a poll.
    """
    now = now or utcnow()
    if kind not in DEVICE_KINDS:
        raise ValueError(f"not a device request kind: {kind}")
    current = Certificate.objects.select_related("ca", "owner").filter(pk=certificate.pk).first()
    if current is None:
        return _refused(REENROLL_NOT_OURS, RefusalCause.NOT_ALLOWED)
    if current.owner is None:
        return _refused(REENROLL_NO_OWNER, RefusalCause.NOT_ALLOWED)
    if ca is not None and current.ca_id != ca.pk:
        return _refused(
            "This certificate was issued by another CA of this portal; renew it at that CA's URL.",
            RefusalCause.NOT_ALLOWED,
        )
    try:
        parsed = parse_csr(data=csr_der)
    except RequestRefused as exc:
        return _refused(exc.message, RefusalCause.BAD_REQUEST)
    if len(transaction_id) > TRANSACTION_ID_MAX_LENGTH:
        return _refused(TRANSACTION_ID_TOO_LONG, RefusalCause.BAD_REQUEST)
    transaction_id = transaction_id or parsed.key.spki_sha256
    polled = _poll(
        Q(renewal_of=current), kind=kind, transaction_id=transaction_id, spki=parsed.key.spki_sha256
    )
    if polled is not None:
        return polled
    if Certificate.objects.revoked().filter(pk=current.pk).exists():
        return _refused(REENROLL_REVOKED, RefusalCause.NOT_ALLOWED)
    if not Certificate.objects.valid_at(now).filter(pk=current.pk).exists():
        return _refused(REENROLL_EXPIRED, RefusalCause.NOT_ALLOWED)
    auto = bool(settings.ENROLL_AUTO_APPROVE_DEVICE_RENEWALS)
    origin = DeviceOrigin(
        kind=kind,
        transaction_id=transaction_id,
        enrollment_code=None,
        issuing_ca=_explicit(current.ca),
        client_address=client_address,
        approve_by=None,
        pre_approved=auto,
        approve_reason=AUTO_APPROVED_DEVICE_RENEWAL if auto else "",
        ca=current.ca,
    )
    try:
        request = submit_csr(
            owner=current.owner,
            data=parsed.der,
            parsed=parsed,
            now=now,
            renewal_of=current,
            require_verified_email=True,
            device_name=None,
            device=origin,
        )
    except RequestRefused as exc:
        return _refused(exc.message, RefusalCause.BAD_REQUEST)
    except SigningUnavailable as exc:  # the signer or the CA key is not there: nothing was stored
        return _refused(str(exc), RefusalCause.UNAVAILABLE)
    except FlowError as exc:  # a renewal pending or done: if it is this one (sent twice at once), a poll
        polled = _poll(
            Q(renewal_of=current), kind=kind, transaction_id=transaction_id, spki=parsed.key.spki_sha256
        )
        return polled or _refused(str(exc), RefusalCause.NOT_ALLOWED)
    return outcome_of(request)


def find_device_request(*, transaction_id: str, kind: RequestKind) -> DeviceOutcome | None:
    """SCEP's CertPoll (GetCertInitial): the newest device request of ``kind`` with this transactionID."""
    if not transaction_id or len(transaction_id) > TRANSACTION_ID_MAX_LENGTH:
        return None
    request = (
        EnrollmentRequest.objects.filter(kind=kind, transaction_id=transaction_id)
        .select_related("certificate")
        .order_by("-created_at")
        .first()
    )
    return outcome_of(request) if request is not None else None


def outcome_of(request: EnrollmentRequest) -> DeviceOutcome:
    """Where a stored device request stands, as its device is told."""
    if request.status == RequestStatus.ISSUED and request.certificate is not None:
        return DeviceOutcome(DeviceOutcomeKind.ISSUED, request, request.certificate, "")
    if request.status in (RequestStatus.SUBMITTED, RequestStatus.APPROVED):
        return DeviceOutcome(
            DeviceOutcomeKind.PENDING,
            request,
            None,
            f"Request #{request.pk} is waiting for an approver; ask again later with the same request.",
            retry_after=int(settings.ENROLL_DEVICE_RETRY_AFTER),
        )
    if request.status == RequestStatus.REJECTED:
        why = f": {request.reason}" if request.reason else "."
        return _refused(f"Request #{request.pk} was rejected{why}", RefusalCause.REJECTED, request=request)
    return _refused(
        f"Request #{request.pk} failed: {request.reason or 'the certificate could not be issued.'}",
        RefusalCause.REJECTED,
        request=request,
    )


def _explicit(ca: CertificateAuthority | None) -> CertificateAuthority | None:
    """The CA to record on a request: None when it is the default CA (approval's own choice)."""
    return None if ca is None or ca.is_default else ca


# --- wrong codes: lock-out per client address and per code ------------------------------------------


def _count(scope: str, key: str) -> None:
    """Count one wrong try against the code's and the address's counters (django-ratelimit)."""
    rate = settings.ENROLL_RATE_LIMITS.get("device_code", {}).get(scope)
    if not rate or not key:
        return
    get_usage(
        HttpRequest(),  # django-ratelimit only asks a request for its method; the key is ours
        group=f"enroll.device_code.{scope}",
        key=lambda _group, _request: key,
        rate=rate,
        increment=True,
    )


def _keys(*, client_address: str, digest: str) -> dict[str, str]:
    return {
        "address": f"address:{ratelimits.address_key(client_address)}",
        "code": f"code:{digest}" if digest else "",
    }


def _locked_out(*, client_address: str, digest: str) -> DeviceOutcome | None:
    """A refusal when this address, or this code, has had too many wrong tries in the current window.

    Reads both counters in one look-up without counting (:func:`accounts.ratelimits.peek`)."""
    rates = settings.ENROLL_RATE_LIMITS.get("device_code", {})
    counters = {
        scope: (f"enroll.device_code.{scope}", key, rates[scope])
        for scope, key in _keys(client_address=client_address, digest=digest).items()
        if key and rates.get(scope)
    }
    usages = ratelimits.peek(counters)
    for scope in counters:
        usage = usages.get(scope)
        if usage is not None and usage.reached:
            wait = max(1, usage.time_left + 1)
            whom = "from your network address" if scope == "address" else "with this code"
            return _refused(
                f"Too many wrong or unusable enrollment codes {whom} in a short time. Try again in "
                f"{ratelimits.wait_words(wait)}.",
                RefusalCause.LOCKED_OUT,
                retry_after=wait,
            )
    return None


def _count_wrong_code(*, client_address: str, digest: str) -> None:
    for scope, key in _keys(client_address=client_address, digest=digest).items():
        _count(scope, key)
    logger.info("wrong or unusable enrollment code from %s", client_address)


__all__ = [
    "DeviceOutcome",
    "DeviceOutcomeKind",
    "RefusalCause",
    "create_enrollment_code",
    "enroll_with_code",
    "find_device_request",
    "reenroll",
    "revoke_enrollment_code",
]
