"""Enrollment requests: what a user submitted and where it stands.

A request's status changes only in :mod:`enroll.flows`.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from ca.models import Certificate, CertificateAuthority, device_name_field
from ca.types import Account


class RequestKind(models.TextChoices):
    CSR = "csr", _("PKCS#10 CSR")
    SPKAC = "spkac", _("SPKAC (keygen)")
    EST = "est", _("EST (device)")
    SCEP = "scep", _("SCEP (device)")


#: The kinds a device sends, with an enrollment code (or its current certificate), without a browser.
DEVICE_KINDS = (RequestKind.EST, RequestKind.SCEP)


class CodeState(models.TextChoices):
    """Where an enrollment code stands (:meth:`EnrollmentCode.state`)."""

    ACTIVE = "active", _("Active")
    USED_UP = "used_up", _("Used")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")


def code_digest(code: str) -> str:
    """What is stored of an enrollment code: the SHA-256 of its UTF-8 bytes, in hex.

    Codes are random (at least 128 bits), so a slow password hash would buy nothing."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


class EnrollmentCode(models.Model):
    """A code a device enrolls with (EST's HTTP Basic password, SCEP's challengePassword), bound to one
    account and a device name; ``max_uses`` uses (one by default) until ``expires_at``, revocable.

    Only the SHA-256 of the code is stored (:func:`code_digest`); the code itself is shown once. A
    ``pre_approved`` code (made by an approver for someone else's account) issues without the queue.
    ``uses`` grows by a conditional UPDATE in :mod:`enroll.flows.devices`, never past ``max_uses``.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrollment_codes"
    )
    device_name = device_name_field()
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the code, in hex.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pre_approved = models.BooleanField(
        default=False, help_text="Requests made with it are issued without waiting in the approval queue."
    )
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(uses__lte=models.F("max_uses")), name="code_uses_within_max"
            )
        ]

    def __str__(self) -> str:
        device = f" ({self.device_name})" if self.device_name else ""
        return f"enrollment code #{self.pk} for {self.owner}{device}"

    def state(self, now: dt.datetime) -> CodeState:
        """Revoked, used up, expired or active, in that order (a revoked code says so even once expired)."""
        if self.revoked_at is not None:
            return CodeState.REVOKED
        if self.uses >= self.max_uses:
            return CodeState.USED_UP
        if self.expires_at <= now:
            return CodeState.EXPIRED
        return CodeState.ACTIVE

    def is_usable(self, now: dt.datetime) -> bool:
        """Whether a new request may be made with this code now."""
        return self.state(now) == CodeState.ACTIVE

    @property
    def uses_left(self) -> int:
        return max(0, self.max_uses - self.uses)


class RequestStatus(models.TextChoices):
    SUBMITTED = "submitted", _("Submitted")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")
    ISSUED = "issued", _("Issued")
    FAILED = "failed", _("Failed")


class EnrollmentRequest(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="enrollment_requests"
    )
    kind = models.CharField(max_length=8, choices=RequestKind.choices, default=RequestKind.CSR)
    request_der = models.BinaryField(help_text="The request as submitted, in DER.")
    request_sha256 = models.CharField(max_length=64, db_index=True)
    key_description = models.CharField(max_length=32)
    spki_sha256 = models.CharField(max_length=64, db_index=True)
    requested_subject = models.CharField(
        max_length=1024, blank=True, help_text="The subject the request asked for; ignored."
    )
    profile = models.CharField(max_length=32, default="client")
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.SUBMITTED, db_index=True
    )
    created_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why it was rejected or why issuing failed.")
    certificate = models.OneToOneField(
        Certificate, null=True, blank=True, on_delete=models.PROTECT, related_name="enrollment_request"
    )
    renewal_of = models.ForeignKey(
        Certificate,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="renewals",
        help_text="The certificate this request renews, if it is a renewal.",
    )
    device_name = device_name_field()
    enrollment_code = models.ForeignKey(
        EnrollmentCode,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="requests",
        help_text="The code a device enrolled with (EST, SCEP).",
    )
    transaction_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="SCEP's transactionID; for EST the SHA-256 of the request's public key. A device's repeat "
        "of it is a poll.",
    )
    issuing_ca = models.ForeignKey(
        CertificateAuthority,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The CA a device asked for by its URL; empty: the default CA.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="issued") | models.Q(certificate__isnull=False),
                name="issued_request_has_certificate",
            )
        ]

    def __str__(self) -> str:
        return f"request #{self.pk} by {self.owner} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES

    @property
    def is_device_request(self) -> bool:
        return self.kind in DEVICE_KINDS

    @property
    def request_format(self) -> str:
        """What ``request_der`` is, for the CA: "spkac", or "csr" (a device's EST or SCEP request is a
        PKCS#10 CSR too)."""
        return "spkac" if self.kind == RequestKind.SPKAC else "csr"


#: A request that is waiting for, or got, a certificate: a renewal in one of these states means the
#: certificate it renews needs no further renewal (and no more expiry reminders).
PENDING_STATUSES = (RequestStatus.SUBMITTED, RequestStatus.APPROVED)
RENEWING_STATUSES = (RequestStatus.SUBMITTED, RequestStatus.APPROVED, RequestStatus.ISSUED)


class ReminderDays(models.IntegerChoices):
    """How many days before expiry the owner is reminded (each reminder once)."""

    THIRTY = 30, "30 days"
    SEVEN = 7, "7 days"
    ONE = 1, "1 day"


class ExpiryReminder(models.Model):
    """One expiry reminder sent for a certificate; the unique constraint makes each one go out once."""

    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="expiry_reminders")
    days = models.PositiveSmallIntegerField(choices=ReminderDays.choices)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(fields=["certificate", "days"], name="expiry_reminder_once_per_threshold")
        ]

    def __str__(self) -> str:
        return f"{self.days}-day reminder for {self.certificate.serial}"


class SpkacChallenge(models.Model):
    """A challenge handed out for one SPKAC (legacy ``<keygen>`` / ``openssl spkac``): single use, expiring.

    ``binding`` ties it to where it was shown: a random token kept in the user's web session, or
    :data:`enroll.challenges.COMMAND_LINE_BINDING` for ``manage.py spkac_challenge``. ``used_at`` is set
    once, by a conditional UPDATE, when an SPKAC carrying it is accepted.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="spkac_challenges"
    )
    binding = models.CharField(max_length=64, help_text="The session-bound token (or the command line).")
    value = models.CharField(max_length=64, help_text="The random challenge the SPKAC must carry.")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "used_at"], name="spkac_challenge_owner_used")]

    def __str__(self) -> str:
        return f"SPKAC challenge for {self.owner} ({'used' if self.used_at else 'unused'})"


class ApproverNoticeKind(models.TextChoices):
    """What an approver was told about a request (enroll.approver_mail)."""

    NEW = "new", "New request (its own e-mail or a digest)"
    OVERDUE = "overdue", "Reminder: waiting past the service level"


class ApproverNotice(models.Model):
    """One approver told about one request: of each kind once (the unique constraint), however often
    ``manage.py notify_approvers`` runs; a digest lists only the waiting requests it has no NEW row for."""

    request = models.ForeignKey(EnrollmentRequest, on_delete=models.CASCADE, related_name="approver_notices")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=ApproverNoticeKind.choices)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver", "kind"], name="approver_notice_once")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.approver} about request #{self.request_id}"


class FirstDownload(models.Model):
    """When a certificate's owner first downloaded it (any format; the .p12 built in the browser fetches the
    chain, so it counts too): the dashboard's "your certificate is ready: download it" step ends then.

    One row per certificate, written once (:meth:`record`); downloads by staff are not recorded. Rows
    with no ``downloaded_at`` stand for certificates issued before the portal recorded downloads.
    """

    certificate = models.OneToOneField(
        Certificate, on_delete=models.CASCADE, primary_key=True, related_name="first_download"
    )
    downloaded_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The owner's first download; empty: issued before downloads were recorded.",
    )
    fmt = models.CharField(max_length=16, blank=True, help_text="The format of that first download.")

    def __str__(self) -> str:
        return f"first download of {self.certificate.serial}"

    @classmethod
    def record(cls, *, certificate: Certificate, by: Account, fmt: str, now: dt.datetime) -> bool:
        """Note ``by``'s download of ``certificate`` if ``by`` owns it and it is the first: True then."""
        if certificate.owner_id is None or by.pk != certificate.owner_id:
            return False
        _row, created = cls.objects.get_or_create(
            certificate=certificate, defaults={"downloaded_at": now, "fmt": fmt}
        )
        return created
