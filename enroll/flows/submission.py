"""Submitting requests: a CSR, an SPKAC (with its challenge), a renewal; a refusal stores nothing.

Also the owner's device name (a label, never in the certificate): chosen at submission, copied to the
certificate when it is issued, changed later with :func:`set_device_name` (on the request and its
certificate together, audited).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.services import verified_email
from ca import audit
from ca.clock import utcnow
from ca.errors import KeyUnavailable
from ca.models import AuditEvent, Certificate, CertificateAuthority, clean_device_name
from ca.pki.csr import ParsedRequest, parse_csr
from ca.pki.errors import RequestRefused
from ca.pki.profiles import SubjectInfo
from ca.pki.spkac import ParsedSpkac, parse_spkac
from ca.services.issuance import Reserved, key_refusal
from ca.types import Account
from enroll import approver_mail, challenges
from enroll.flows import approval
from enroll.flows.approval import approve
from enroll.flows.common import (
    AUTO_APPROVED_RENEWAL,
    CONNECTION_LOST,
    DATABASE_LOST,
    FlowError,
    SubmissionRefused,
    drop_broken_connections,
    subject_for,
)
from enroll.models import RENEWING_STATUSES, EnrollmentCode, EnrollmentRequest, RequestKind, RequestStatus

logger = logging.getLogger(__name__)


#: Translated where it is shown (gettext_lazy): the flows take no request and know no language.
EMAIL_NOT_VERIFIED = _(
    "Verify your e-mail address first: certificates carry it, so the portal only takes requests from "
    "accounts with a verified address. Open the link in the e-mail we sent you, or ask for a new one on "
    "your profile page."
)


def submission_blocker(owner: Account) -> str | None:
    """Why ``owner`` cannot submit requests in the portal right now, or None if they can."""
    if verified_email(owner) is None:
        return str(EMAIL_NOT_VERIFIED)
    return None


def renewal_blocker(certificate: Certificate) -> str | None:
    """Why ``certificate`` cannot be renewed now (a renewal is pending or done), or None."""
    renewal = certificate.renewals.filter(status__in=RENEWING_STATUSES).order_by("-created_at").first()
    if renewal is None:
        return None
    if renewal.status == RequestStatus.ISSUED:
        return gettext(
            "This certificate was renewed already (request #%(number)s). Renew the new certificate instead "
            "when its time comes."
        ) % {"number": renewal.pk}
    return gettext(
        "A renewal of this certificate is waiting for a decision (request #%(number)s). You will get an "
        "e-mail when it is decided."
    ) % {"number": renewal.pk}


@dataclass(frozen=True, slots=True)
class DeviceOrigin:
    """Where a device's request came from (:mod:`enroll.flows.devices`): its kind (EST, SCEP), the
    transaction ID its repeats are recognised by, the enrollment code (None for a re-enrollment) and the
    CA its URL named (``issuing_ca``, recorded on the request: None for the default CA; ``ca``, the same CA
    as the device's URL found it, issued on without looking it up again: None to look the default up).
    ``on_stored`` runs in the storing transaction (the code's use is counted there); ``pre_approved``
    approves it at once, by ``approve_by`` with ``approve_reason``."""

    kind: RequestKind
    transaction_id: str
    enrollment_code: EnrollmentCode | None
    issuing_ca: CertificateAuthority | None
    client_address: str
    approve_by: Account | None = None
    pre_approved: bool = False
    approve_reason: str = ""
    on_stored: Callable[[EnrollmentRequest], None] | None = None
    ca: CertificateAuthority | None = None

    @property
    def serial_purpose(self) -> str:
        """What its serial is reserved for, before the request has a number."""
        code = f" with enrollment code #{self.enrollment_code.pk}" if self.enrollment_code is not None else ""
        return f"{str(self.kind).upper()} request{code}, transaction {self.transaction_id[:64]}"


def submit_csr(
    *,
    owner: Account,
    data: bytes | str,
    now: dt.datetime | None = None,
    renewal_of: Certificate | None = None,
    require_verified_email: bool = False,
    device_name: str | None = None,
    device: DeviceOrigin | None = None,
    parsed: ParsedRequest | None = None,
) -> EnrollmentRequest:
    """Check a CSR and store it as a new SUBMITTED request.

    Raises RequestRefused (the PKI core's checks) or SubmissionRefused (the portal's rules); stores nothing
    then. The portal passes ``require_verified_email=True``; the operator's command line may submit for
    any account. ``renewal_of`` makes the request a renewal of one of the owner's certificates (see
    :func:`submit_renewal`). ``device_name`` is the owner's label (:func:`ca.models.clean_device_name`);
    None for a renewal means the renewed certificate's, else none. ``device`` marks a device's request
    (EST, SCEP: :mod:`enroll.flows.devices`); a pre-approved one is approved and issued at once
    (:func:`_store_and_issue`). ``parsed`` is ``data`` parsed already by :func:`ca.pki.csr.parse_csr`.
    """
    now = now or utcnow()
    # The subject is the account's (its verified address): built once, for the check and for issuing.
    subject = subject_for(owner) if require_verified_email else None
    if subject is not None and subject.email is None:
        raise SubmissionRefused(str(EMAIL_NOT_VERIFIED))
    name = _device_name(device_name)
    parsed = parsed if parsed is not None else parse_csr(data=data)
    if device is not None and device.pre_approved:
        return _store_and_issue(owner=owner, parsed=parsed, device=device, now=now, renewal_of=renewal_of,
                                device_name=device_name, name=name, subject=subject)  # fmt: skip
    auto_approve = False
    with transaction.atomic():
        if renewal_of is not None:
            renewal_of = _lock_renewable(renewal_of, owner=owner)
            if device_name is None:
                name = renewal_of.device_name
            auto_approve = _auto_approves(renewal_of, now=now)
        request = _store(
            owner=owner,
            kind=device.kind if device is not None else RequestKind.CSR,
            parsed=parsed,
            requested_subject=parsed.requested_subject[:1024],
            renewal_of=renewal_of,
            notes=[f"renewal of {renewal_of.serial}"] if renewal_of is not None else [],
            now=now,
            device_name=name,
            announce=not auto_approve,
            device=device,
        )
    if auto_approve:
        # Stored (committed) first: approval reserves its serial in a transaction of its own.
        return approve(request_id=request.pk, by=None, now=now, reason=AUTO_APPROVED_RENEWAL)
    return request


def _store_and_issue(
    *,
    owner: Account,
    parsed: ParsedRequest,
    device: DeviceOrigin,
    now: dt.datetime,
    renewal_of: Certificate | None,
    device_name: str | None,
    name: str,
    subject: SubjectInfo | None,
) -> EnrollmentRequest:
    """A pre-approved device request (an approver's code, an auto-approved re-enrollment): its serial is
    reserved (committed) first, then it is stored, approved and issued in one transaction, whose audit
    entries (code used, submitted, approved, issued) are appended together (:func:`ca.audit.batch`). A
    refusal stores nothing and discards the serial. Returns the request, ISSUED or FAILED."""
    # Checked before the serial is spent and the write lock taken; issuing checks again in the transaction.
    if (refusal := key_refusal(spki_sha256=parsed.key.spki_sha256, owner=owner)) is not None:
        raise SubmissionRefused(refusal)
    reserved = approval.reserve_serial(
        purpose=device.serial_purpose, ca=device.ca, now=now, request_sha256=parsed.sha256,
        spki_sha256=parsed.key.spki_sha256, owner=owner, by=device.approve_by,
    )  # fmt: skip
    try:
        if isinstance(reserved, Reserved) and subject is not None:
            # drafted and linted before the write lock is taken: the transaction holds it for less
            about_to_store = EnrollmentRequest(owner=owner, kind=device.kind, request_der=parsed.der)
            reserved = approval.prepare(reserved, requests=[about_to_store], subjects={owner.pk: subject})
        with transaction.atomic(), audit.batch():
            if renewal_of is not None:
                renewal_of = _lock_renewable(renewal_of, owner=owner)
                if device_name is None:
                    name = renewal_of.device_name
            request = _store(
                owner=owner,
                kind=device.kind,
                parsed=parsed,
                requested_subject=parsed.requested_subject[:1024],
                renewal_of=renewal_of,
                notes=[f"renewal of {renewal_of.serial}"] if renewal_of is not None else [],
                now=now,
                device_name=name,
                announce=False,  # nobody needs to decide
                device=device,
                key_checked=True,
            )
            approval.approve_new(
                request, reserved=reserved, by=device.approve_by, reason=device.approve_reason, now=now,
                subject=subject,
            )  # fmt: skip
    except CONNECTION_LOST as exc:
        drop_broken_connections()
        raise FlowError(f"The request was not stored: {DATABASE_LOST}") from exc
    except KeyUnavailable as exc:  # the token or the signer went away meanwhile: nothing was stored
        raise approval.key_unavailable(exc, now=now) from exc
    except (FlowError, RequestRefused) as exc:
        approval.discard_serial(reserved, reason=str(exc), now=now)
        raise
    return request


def submit_spkac(
    *,
    owner: Account,
    data: bytes | str,
    session_binding: str,
    now: dt.datetime | None = None,
    require_verified_email: bool = False,
    device_name: str | None = None,
) -> EnrollmentRequest:
    """Check an SPKAC, consume its challenge and store it as a new SUBMITTED request of kind SPKAC.

    ``session_binding`` is where the challenge must have been shown: the web session's token
    (:func:`enroll.challenges.session_binding`) or :data:`enroll.challenges.COMMAND_LINE_BINDING`.
    MD5 signatures pass only with ``settings.ENROLL_SPKAC_ALLOW_MD5``. Raises RequestRefused (the
    SPKAC), :class:`enroll.challenges.ChallengeRefused` (its challenge) or SubmissionRefused (the
    portal's rules); stores nothing then, and a challenge that was not itself refused stays unused.
    ``device_name`` is the owner's label, as for :func:`submit_csr`.
    """
    now = now or utcnow()
    if require_verified_email and (blocker := submission_blocker(owner)) is not None:
        raise SubmissionRefused(blocker)
    name = _device_name(device_name)
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
            device_name=name,
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
    device_name: str = "",
    announce: bool = True,
    device: DeviceOrigin | None = None,
    key_checked: bool = False,
) -> EnrollmentRequest:
    """Refuse a blocked key or another account's key, else store the request as SUBMITTED (audited).

    Runs inside the caller's transaction; ``notes`` go into the audit entry's detail. ``announce`` tells
    the approvers on commit; not for a renewal that the submission approves itself (nobody needs to decide).
    ``key_checked``: the caller checked the key already and issues in this transaction, which checks again.
    """
    if not key_checked and (refusal := key_refusal(spki_sha256=parsed.key.spki_sha256, owner=owner)):
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
        device_name=device_name,
        enrollment_code=device.enrollment_code if device is not None else None,
        transaction_id=device.transaction_id if device is not None else "",
        issuing_ca=device.issuing_ca if device is not None else None,
    )
    label = [] if kind == RequestKind.CSR else [str(kind).upper()]
    if device is not None:
        if device.enrollment_code is not None:
            label.append(f"enrollment code #{device.enrollment_code.pk}")
        if device.client_address:
            label.append(f"from {device.client_address}")
        if device.on_stored is not None:
            device.on_stored(request)
    audit.record(
        event=AuditEvent.REQUEST_SUBMITTED,
        actor=owner,
        subject_user=owner,
        request_sha256=request.request_sha256,
        serial=renewal_of.serial if renewal_of is not None else "",
        detail=", ".join([f"request #{request.pk}", *label, request.key_description, *notes]),
        now=now,
    )
    if announce:
        approver_mail.announce_on_commit(request_id=request.pk)  # on commit: a task mails the approvers
    return request


def submit_renewal(
    *,
    owner: Account,
    certificate: Certificate,
    data: bytes | str,
    now: dt.datetime | None = None,
    device_name: str | None = None,
) -> EnrollmentRequest:
    """Submit a CSR that renews ``certificate`` (the owner's own, with a verified address).

    The same key may be used again unless it was blocked (revoked for key compromise). With
    ``settings.ENROLL_AUTO_APPROVE_RENEWALS`` the request is approved and issued at once when the
    certificate is still valid and not revoked; the returned request is then ISSUED (or FAILED).
    ``device_name`` None keeps the renewed certificate's device name; "" means none.
    """
    return submit_csr(
        owner=owner,
        data=data,
        now=now,
        renewal_of=certificate,
        require_verified_email=True,
        device_name=device_name,
    )


def _device_name(value: str | None) -> str:
    """The device name as stored, or SubmissionRefused saying what to change (nothing is stored)."""
    try:
        return clean_device_name(value)
    except ValidationError as exc:
        raise SubmissionRefused(" ".join(exc.messages)) from None


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
        raise SubmissionRefused(gettext("Only the owner of a certificate can renew it."))
    if (blocker := renewal_blocker(locked)) is not None:
        raise SubmissionRefused(blocker)
    return locked


def _auto_approves(certificate: Certificate, *, now: dt.datetime) -> bool:
    """Whether a renewal of ``certificate`` (checked by :func:`_lock_renewable`) is approved at once."""
    return (
        bool(settings.ENROLL_AUTO_APPROVE_RENEWALS)
        and Certificate.objects.valid_at(now).filter(pk=certificate.pk).exists()
    )


def set_device_name(
    *,
    owner: Account,
    device_name: str,
    request: EnrollmentRequest | None = None,
    certificate: Certificate | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The owner names the device of one of their requests or certificates; returns the name stored.

    Pass ``request`` or ``certificate``. A request and the certificate issued for it share the name, so
    both change (under the request's row lock, which approval holds while it copies the name to a new
    certificate). Only the owner may do it (:class:`FlowError` otherwise); a name that breaks the rule is
    refused with :class:`SubmissionRefused` saying what to change. A change is audited (DEVICE_RENAMED).
    """
    now = now or utcnow()
    name = _device_name(device_name)
    with transaction.atomic():
        if request is not None:
            locked = EnrollmentRequest.objects.select_for_update().filter(pk=request.pk, owner=owner).first()
            if locked is None:
                raise FlowError(gettext("Only the owner of a request can change its device name."))
            old, certificate_id = locked.device_name, locked.certificate_id
        elif certificate is not None and certificate.owner_id == owner.pk:
            locked = EnrollmentRequest.objects.select_for_update().filter(certificate=certificate).first()
            old = Certificate.objects.filter(pk=certificate.pk).values_list("device_name", flat=True).get()
            certificate_id = certificate.pk
        else:
            raise FlowError(gettext("Only the owner of a certificate can change its device name."))
        if name == old:
            return name
        serial = ""
        if locked is not None:
            EnrollmentRequest.objects.filter(pk=locked.pk).update(device_name=name)
        if certificate_id is not None:
            Certificate.objects.filter(pk=certificate_id).update(device_name=name)
            serial = Certificate.objects.filter(pk=certificate_id).values_list("serial", flat=True).get()
        where = [f"request #{locked.pk}"] if locked is not None else []
        audit.record(
            event=AuditEvent.DEVICE_RENAMED,
            actor=owner,
            subject_user=owner,
            request_sha256=locked.request_sha256 if locked is not None else "",
            serial=serial,
            detail=", ".join([*where, f"device name {_quoted(old)} -> {_quoted(name)}"]),
            now=now,
        )
    return name


def _quoted(device_name: str) -> str:
    return ascii(device_name) if device_name else "(none)"
