"""The CA's records: authorities, issued certificates, revocations and CRL publications.

Models own rules about one row; steps across rows (issue, revoke, publish) live in :mod:`ca.services`.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Self

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Length
from django.urls import reverse
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ca.pki.node_reports import NODE_NAME, ReportOutcome
from ca.pki.profiles import IssuerUrls
from ca.pki.serials import format_serial_colons


class RevocationReason(models.TextChoices):
    """RFC 5280 section 5.3.1 reason codes (removeFromCRL and aACompromise are not used here)."""

    UNSPECIFIED = "unspecified", _("Unspecified")
    KEY_COMPROMISE = "key_compromise", _("Key compromise")
    CA_COMPROMISE = "ca_compromise", _("CA compromise")
    AFFILIATION_CHANGED = "affiliation_changed", _("Affiliation changed")
    SUPERSEDED = "superseded", _("Superseded")
    CESSATION_OF_OPERATION = "cessation_of_operation", _("Cessation of operation")
    CERTIFICATE_HOLD = "certificate_hold", _("Certificate hold")
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn", _("Privilege withdrawn")

    @property
    def flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags[self.value]


class CertificateAuthority(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=64)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    certificate_der = models.BinaryField()
    key_file = models.CharField(
        max_length=255, help_text="File name of the encrypted key in the CA key folder."
    )
    key_type = models.CharField(max_length=16)
    subject = models.CharField(max_length=512)
    serial = models.CharField(max_length=42)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    fingerprint_sha256 = models.CharField(max_length=64)
    is_default = models.BooleanField(
        default=False, help_text="The CA that signs client certificates (exactly one at a time)."
    )
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(
        null=True, blank=True, help_text="When its parent revoked this CA (manage.py revoke_ca)."
    )
    revocation_reason = models.CharField(max_length=32, choices=RevocationReason.choices, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True, help_text="Who revoked it.")
    # Key generations (manage.py rollover_ca, ca.services.rollover): a rollover makes a new row for the same
    # CA name and subject with a new key, linked to the generation it replaces, and the two link
    # certificates of RFC 4210 section 4.4 between the old key and the new one.
    previous = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="successor",
        help_text="The key generation this one replaced (manage.py rollover_ca); it issues no more.",
    )
    link_from_previous_der = models.BinaryField(
        blank=True, default=b"", help_text="Old-signs-new link certificate: this key, signed by the previous."
    )
    link_to_previous_der = models.BinaryField(
        blank=True, default=b"", help_text="New-signs-old link certificate: the previous key, signed by this."
    )

    class Meta:
        verbose_name = "certificate authority"
        verbose_name_plural = "certificate authorities"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="ca_one_default"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(bytes(self.certificate_der))

    def public_url(self, name: str) -> str:
        return settings.ENROLL_PUBLIC_URL + reverse(name, kwargs={"slug": self.slug})

    @property
    def urls(self) -> IssuerUrls:
        """The URLs written into certificates this CA issues: its own CRL and certificate, and the one
        OCSP responder URL that answers for every CA of the portal (so a front server's single
        ``ssl_ocsp_responder`` serves the whole chain)."""
        responder = settings.ENROLL_PUBLIC_URL + reverse("ca:responder")
        return IssuerUrls(
            crl_url=self.public_url("ca:crl-der"),
            ca_issuers_url=self.public_url("ca:cert-der"),
            ocsp_url=responder if settings.ENROLL_OCSP_IN_AIA else None,
        )

    @property
    def key_in_token(self) -> bool:
        """Whether the key is in a PKCS#11 token: ``key_file`` then holds its RFC 7512 URI
        (``pkcs11:token=...;object=...``), else the name of the encrypted key file."""
        return self.key_file.startswith("pkcs11:")

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def newest_generation(self) -> CertificateAuthority:
        """The newest key generation of this CA: the one that issues (a replaced generation only keeps
        signing its CRL and OCSP answers for the certificates it issued)."""
        node: CertificateAuthority = self
        seen = {node.pk}
        while True:
            try:
                following = node.successor
            except CertificateAuthority.DoesNotExist:
                return node
            if following.pk in seen:  # a cycle cannot be made through rollover_ca; never loop on one
                return node
            seen.add(following.pk)
            node = following

    def generations(self) -> list[CertificateAuthority]:
        """Every key generation of this CA, oldest first (this row among them)."""
        first: CertificateAuthority = self
        seen = {first.pk}
        while first.previous is not None and first.previous.pk not in seen:
            first = first.previous
            seen.add(first.pk)
        found = [first]
        while True:
            try:
                following = found[-1].successor
            except CertificateAuthority.DoesNotExist:
                return found
            if following in found:
                return found
            found.append(following)

    @property
    def link_certificates(self) -> tuple[x509.Certificate, ...]:
        """The link certificates made when this generation replaced the previous: old-signs-new, then
        new-signs-old (RFC 4210 section 4.4); none for a first generation."""
        return tuple(
            x509.load_der_x509_certificate(bytes(der))
            for der in (self.link_from_previous_der, self.link_to_previous_der)
            if der
        )

    def revoked_in_chain(self) -> CertificateAuthority | None:
        """This CA or the nearest parent that was revoked, if any: nothing below it may be trusted."""
        return next((ca for ca in self.chain() if ca.revoked_at is not None), None)

    def chain(self) -> list[CertificateAuthority]:
        """This CA and its parents, up to the root."""
        chain: list[CertificateAuthority] = []
        node: CertificateAuthority | None = self
        while node is not None and node not in chain:
            chain.append(node)
            node = node.parent
        return chain


class CertificateStatus(models.TextChoices):
    VALID = "valid", _("Valid")
    REVOKED = "revoked", _("Revoked")
    EXPIRED = "expired", _("Expired")
    NOT_YET_VALID = "not_yet_valid", _("Not yet valid")


# --- certificate validity, one rule read two ways ------------------------------------------------
#
# RFC 5280 4.1.2.5: the validity period is "the period of time from notBefore through notAfter,
# inclusive", and both times are whole seconds (4.1.2.5.1 and 4.1.2.5.2 allow no fractions). So the
# notAfter second is valid to its end, and in the microseconds Django stores a certificate is within its
# validity period at ``t`` iff
#
#     not_before <= t < not_after + 1 s
#
# closed at notBefore, open one second after notAfter: the closed interval of whole seconds, which is
# what OpenSSL's whole-second clock accepts too. Each end is stated once, as a _ValidityEnd, and read
# both as SQL (CertificateQuerySet) and for one row (Certificate.status_at), so the two cannot drift
# apart; tests/ca/test_certificate_queries.py checks them against each other.


@dataclass(frozen=True)
class _ValidityEnd:
    """One end of the validity period: it has passed at ``when`` iff ``field <= when - delay``."""

    field: str
    delay: dt.timedelta

    def passed_q(self, when: dt.datetime) -> models.Q:
        """The rows for which this end has passed at ``when``."""
        return models.Q(**{f"{self.field}__lte": when - self.delay})

    def pending_q(self, when: dt.datetime) -> models.Q:
        """The other rows (the column is NOT NULL): a plain comparison, so an index on it serves."""
        return models.Q(**{f"{self.field}__gt": when - self.delay})

    def passed(self, certificate: Certificate, when: dt.datetime) -> bool:
        """Whether this end of ``certificate`` has passed at ``when``."""
        edge: dt.datetime = getattr(certificate, self.field)
        return edge <= when - self.delay


#: Valid from the notBefore instant on: notBefore is inclusive.
_STARTS = _ValidityEnd("not_before", dt.timedelta(0))
#: Expired from one second after notAfter on: the notAfter second is inclusive.
_ENDS = _ValidityEnd("not_after", dt.timedelta(seconds=1))
#: Revoked: a revocation is never undone here (no removeFromCRL), so it counts at every instant asked
#: about, whatever its ``revoked_at``; for one row this is ``hasattr(certificate, "revocation")``.
_REVOKED = models.Q(revocation__isnull=False)
_UNREVOKED = models.Q(revocation__isnull=True)


class CertificateQuerySet(models.QuerySet["Certificate"]):
    """The portal's words for asking about certificates.

    The status terms follow :meth:`Certificate.status_at`, which checks revoked first, then expired:
    ``revoked()``, ``valid_at(t)`` and ``expired_at(t)`` select exactly the rows whose ``status_at(t)``
    is REVOKED, VALID and EXPIRED (the rest is NOT_YET_VALID). A revoked certificate is neither valid nor
    expired. The terms combine (``Certificate.objects.issued().valid_at(now)``) and chain with
    ``filter``; the status terms do not imply :meth:`issued`.
    """

    def issued(self) -> Self:
        """Certificates signed and stored: every row.

        A row is inserted only after its certificate is signed, with its DER (the ``certificate_has_der``
        CHECK constraint); a serial reserved and never stored is a :class:`SerialReservation`, not a
        certificate. The term stays so that queries say what they mean.
        """
        return self.all()

    def of_keys(self, spki_sha256: Iterable[str]) -> Self:
        """Certificates for any of these public keys (lower-case hex SHA-256 of the DER SPKI)."""
        return self.filter(spki_sha256__in=list(spki_sha256))

    def revoked(self) -> Self:
        """Revoked certificates, expired or not (a revocation counts at every instant)."""
        return self.filter(_REVOKED)

    def valid_at(self, when: dt.datetime) -> Self:
        """Not revoked and within the validity period at ``when`` (notBefore and notAfter inclusive)."""
        return self.filter(_UNREVOKED, _STARTS.passed_q(when), _ENDS.pending_q(when))

    def expired_at(self, when: dt.datetime) -> Self:
        """Not revoked and past the end of the notAfter second at ``when``."""
        return self.filter(_UNREVOKED, _ENDS.passed_q(when))


# --- device names ---------------------------------------------------------------------------------
#
# An owner may label a request, and the certificate issued for it, with the device it is for ("work
# laptop"). The label is the owner's note only: it never goes into a certificate (the subject comes from
# the account). One rule, for every path that takes one (portal forms, command line, the models):
# at most 64 characters of printable text on one line, no leading or trailing spaces; empty means none.

DEVICE_NAME_MAX_LENGTH = 64

#: Unicode general categories a device name may not contain, with the words the error message uses.
_DEVICE_NAME_REFUSED: dict[str, Promise] = {
    "Cc": _("a control character (such as a tab or a line break)"),
    "Zl": _("a line break"),
    "Zp": _("a paragraph break"),
    "Cf": _("an invisible formatting character (such as a text-direction override)"),
    "Cs": _("a broken character (an unpaired surrogate)"),
    "Co": _("a private-use character"),
    "Cn": _("a character Unicode does not define"),
}


def device_name_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a stored device name, in words for its owner, or None."""
    if len(value) > DEVICE_NAME_MAX_LENGTH:
        return gettext(
            "A device name is at most %(limit)s characters; this one has %(length)s. Shorten it."
        ) % {"limit": DEVICE_NAME_MAX_LENGTH, "length": len(value)}
    for position, char in enumerate(value, start=1):
        if (what := _DEVICE_NAME_REFUSED.get(unicodedata.category(char))) is not None:
            return gettext(
                "A device name is plain text on one line, but this one has %(what)s (%(code)s, character "
                "%(position)s). Remove it and type the name again."
            ) % {"what": what, "code": f"U+{ord(char):04X}", "position": position}
    if value != value.strip():
        return gettext("A device name may not start or end with a space. Remove the spaces around it.")
    return None


def validate_device_name(value: str) -> None:
    """Validator of ``device_name`` fields: raises ValidationError with :func:`device_name_problem`."""
    if (problem := device_name_problem(value)) is not None:
        raise ValidationError(problem, code="device_name")


def clean_device_name(value: str | None) -> str:
    """The device name as stored: spaces around it stripped, Unicode NFC, checked; "" for none.

    Raises ValidationError (its message says what to change) if the name breaks the rule.
    """
    name = unicodedata.normalize("NFC", (value or "").strip())
    validate_device_name(name)
    return name


def device_name_field() -> models.CharField[str, str]:
    """The ``device_name`` column of requests and certificates (the same rule on both)."""
    return models.CharField(
        max_length=DEVICE_NAME_MAX_LENGTH,
        blank=True,
        default="",
        validators=[validate_device_name],
        help_text="The owner's label for the device (not in the certificate); empty for none.",
    )


class Certificate(models.Model):
    """A certificate this portal signed and stored, with its DER (a CHECK constraint says so).

    Its serial was reserved in :class:`SerialReservation` (committed) before it was signed; the row is
    inserted only after signing.
    """

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="certificates")
    serial = models.CharField(max_length=42, help_text="Upper-case hex, as nginx prints $ssl_client_serial.")
    der = models.BinaryField()
    subject = models.CharField(max_length=512)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField(db_index=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="certificates"
    )
    fingerprint_sha256 = models.CharField(max_length=64, db_index=True)
    spki_sha256 = models.CharField(max_length=64, db_index=True)
    profile = models.CharField(max_length=32)
    request_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the request it was issued for.")
    created_at = models.DateTimeField()
    device_name = device_name_field()

    objects = CertificateQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["ca", "serial"], name="certificate_unique_serial_per_ca"),
            models.CheckConstraint(
                condition=models.lookups.GreaterThan(Length("der"), 0), name="certificate_has_der"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} #{self.serial}"

    @cached_property
    def x509(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(bytes(self.der))

    @property
    def serial_int(self) -> int:
        return int(self.serial, 16)

    @property
    def serial_colons(self) -> str:
        return format_serial_colons(serial=self.serial_int)

    def status_at(self, when: dt.datetime) -> CertificateStatus:
        """Revoked, else expired, else not yet valid, else valid at ``when``: the rule the status terms
        of :class:`CertificateQuerySet` select by (notBefore and notAfter inclusive, RFC 5280 4.1.2.5)."""
        if hasattr(self, "revocation"):
            return CertificateStatus.REVOKED
        if _ENDS.passed(self, when):
            return CertificateStatus.EXPIRED
        if not _STARTS.passed(self, when):
            return CertificateStatus.NOT_YET_VALID
        return CertificateStatus.VALID


class Revocation(models.Model):
    certificate = models.OneToOneField(Certificate, on_delete=models.PROTECT, related_name="revocation")
    reason = models.CharField(max_length=32, choices=RevocationReason.choices)
    revoked_at = models.DateTimeField(db_index=True)
    invalidity_date = models.DateTimeField(
        null=True, blank=True, help_text="When the key is known or suspected to have been compromised."
    )
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-revoked_at"]

    def __str__(self) -> str:
        return f"{self.certificate.serial} ({self.reason})"


class ReservationState(models.TextChoices):
    """What became of a reserved serial."""

    RESERVED = "reserved", "Reserved"  # signing may be under way, or the process died after it
    ISSUED = "issued", "Issued"  # the certificate with this serial is stored
    DISCARDED = "discarded", "Discarded"  # refused before any certificate with it left the CA
    REVOKED = "revoked", "Revoked"  # never stored, revoked by serial: listed on the CA's CRL


class SerialReservation(models.Model):
    """A serial drawn for a certificate of ``ca``, committed before anything is signed with it.

    The unique constraint is the collision guard (RFC 5280 4.1.2.2: serials are unique per issuer): a
    drawn serial that is taken is an error, never silently drawn again. A reservation still RESERVED long
    after it was made may stand for a certificate that was signed and never stored (the process died in
    between): the system checks and the CRL health page report it, and ``manage.py revoke SERIAL``
    revokes it, which lists the serial on the CA's CRL until ``not_after`` (the notAfter a certificate
    signed with it has).
    """

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="reservations")
    serial = models.CharField(max_length=42, help_text="Upper-case hex, as on the certificate.")
    purpose = models.CharField(max_length=200, help_text="What the serial is for, e.g. 'request #12'.")
    not_after = models.DateTimeField(help_text="The notAfter of the certificate to be signed with it.")
    reserved_at = models.DateTimeField()
    state = models.CharField(
        max_length=16, choices=ReservationState.choices, default=ReservationState.RESERVED
    )
    closed_at = models.DateTimeField(null=True, blank=True, help_text="When it left the RESERVED state.")
    note = models.CharField(max_length=500, blank=True, help_text="Why it was discarded or revoked.")
    revocation_reason = models.CharField(max_length=32, choices=RevocationReason.choices, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-reserved_at"]
        constraints = [
            models.UniqueConstraint(fields=["ca", "serial"], name="reservation_unique_serial_per_ca")
        ]
        indexes = [
            # the open and the revoked ones are few among millions: the checks and CRLs read only those
            models.Index(
                fields=["reserved_at"],
                condition=models.Q(state="reserved"),
                name="reservation_open",
            ),
            models.Index(
                fields=["ca", "not_after"], condition=models.Q(state="revoked"), name="reservation_revoked"
            ),
        ]

    def __str__(self) -> str:
        return f"serial {self.serial} ({self.purpose}, {self.state})"


class CrlPublication(models.Model):
    """One signed CRL. Every web process serves the newest row, so all serve the same bytes."""

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="crls")
    number = models.PositiveBigIntegerField()
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    der = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    entries = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "CRL publication"
        ordering = ["-number"]
        get_latest_by = "number"
        constraints = [models.UniqueConstraint(fields=["ca", "number"], name="crl_unique_number_per_ca")]

    def __str__(self) -> str:
        return f"CRL #{self.number} of {self.ca.slug}"


class AuditEvent(models.TextChoices):
    SIGN_UP = "sign_up", "Sign-up"
    EMAIL_VERIFIED = "email_verified", "E-mail verified"
    REQUEST_SUBMITTED = "request_submitted", "Request submitted"
    REQUEST_APPROVED = "request_approved", "Request approved"
    REQUEST_REJECTED = "request_rejected", "Request rejected"
    REQUEST_FAILED = "request_failed", "Issuing failed"
    CERTIFICATE_ISSUED = "certificate_issued", "Certificate issued"
    CERTIFICATE_REVOKED = "certificate_revoked", "Certificate revoked"
    CRL_PUBLISHED = "crl_published", "CRL published"
    CA_CREATED = "ca_created", "CA created"
    FRONT_SERVER_REGISTERED = "front_server_registered", "Front server registered"
    FRONT_SERVER_KEY_ROTATED = "front_server_key_rotated", "Front server key rotated"
    FRONT_SERVER_REMOVED = "front_server_removed", "Front server removed"
    CA_REVOKED = "ca_revoked", "CA revoked"
    # CA keys (ca.services.rollover, authorities.move_ca_key): a new key generation, a key moved to a token.
    CA_ROLLED_OVER = "ca_rolled_over", "CA key rolled over"
    CA_KEY_MOVED = "ca_key_moved", "CA key moved into a token"
    # Account events (accounts.auditing): who, from which client address; never a password.
    LOGIN = "login", "Logged in"
    LOGIN_FAILED = "login_failed", "Login failed"
    LOGOUT = "logout", "Logged out"
    CERTIFICATE_LOGIN = "certificate_login", "Signed in with a certificate"
    PASSWORD_CHANGED = "password_changed", "Password changed"
    PASSWORD_RESET = "password_reset", "Password reset by e-mailed link"
    EMAIL_CHANGED = "email_changed", "E-mail address changed"
    # Owner actions in the portal (enroll): the label of a request's or certificate's device.
    DEVICE_RENAMED = "device_renamed", "Device name changed"
    # Managed devices (enroll.flows.devices): enrollment codes, never the code itself.
    ENROLLMENT_CODE_CREATED = "enrollment_code_created", "Enrollment code created"
    ENROLLMENT_CODE_REVOKED = "enrollment_code_revoked", "Enrollment code revoked"
    ENROLLMENT_CODE_USED = "enrollment_code_used", "Enrollment code used"
    # The signer process (ca.signer): what it signed with a CA key and what it refused, and for whom.
    SIGNER_SIGNED = "signer_signed", "Signed by the signer"
    SIGNER_REFUSED = "signer_refused", "Refused by the signer"


class AuditEntry(models.Model):
    """One thing that happened, who did it and to what. Written by :func:`ca.audit.record`, never edited.

    The entries form a hash chain (:mod:`ca.audit`): entry number ``sequence`` carries the SHA-256 of its
    predecessor (``prev_hash``) and its own (``entry_hash``) over a canonical serialisation of its fields;
    ``manage.py verify_audit`` walks it. ``sequence`` is NULL only for the moment between the commit of an
    entry written while another transaction held the chain and its chaining right after.
    """

    sequence = models.PositiveBigIntegerField(
        null=True, blank=True, unique=True, help_text="Position in the chain: 1, 2, 3, ... without gaps."
    )
    hash_version = models.PositiveSmallIntegerField(
        default=1, help_text="Which canonical serialisation entry_hash was computed over."
    )
    prev_hash = models.CharField(
        max_length=64, blank=True, help_text="entry_hash of the previous entry (zeros for #1)."
    )
    entry_hash = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 over this entry's fields and prev_hash."
    )
    created_at = models.DateTimeField(db_index=True)
    event = models.CharField(max_length=32, choices=AuditEvent.choices, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept if the account is deleted.")
    subject_user = models.CharField(max_length=150, blank=True, help_text="The account concerned.")
    ca_slug = models.CharField(max_length=64, blank=True)
    request_sha256 = models.CharField(max_length=64, blank=True)
    serial = models.CharField(max_length=42, blank=True, db_index=True)
    crl_number = models.PositiveBigIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-sequence"]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.created_at:%Y-%m-%d %H:%M:%S} {self.get_event_display()}"


class IssuanceAuthorisation(models.Model):
    """An approver's word that the serial reserved on ``ca`` may be signed for one request's key.

    Written (committed) by :func:`ca.services.authorisations.write` when a request is approved, before
    anything is signed; the signer (:mod:`ca.signer`) signs a certificate only with an unused authorisation
    for its CA and serial whose key is the certificate's, and notes when it was used. ``approver`` is None
    for the operator's command line and automatic approvals (``approver_name`` says which).
    """

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="authorisations")
    serial = models.CharField(max_length=42, help_text="Upper-case hex, as on the reservation.")
    request_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the approved request.")
    spki_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the key to certify (DER SPKI).")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approver_name = models.CharField(max_length=150, blank=True, help_text="Kept if the account is deleted.")
    created_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True, help_text="When the signer signed with it.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["ca", "serial"], name="authorisation_unique_serial_per_ca")
        ]

    def __str__(self) -> str:
        return f"authorisation of serial {self.serial} ({self.approver_name or 'operator'})"


class BlockedKeySource(models.TextChoices):
    KEY_COMPROMISE = "key_compromise", "Revoked for key compromise"
    OPERATOR = "operator", "Blocked by an operator"
    KNOWN_WEAK = "known_weak", "Known weak or published key"


class BlockedKey(models.Model):
    """A public key no certificate may be issued for again, whoever asks.

    Keyed by the SHA-256 of the DER SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7), the same digest
    :attr:`Certificate.spki_sha256` and the enrollment request carry. A revocation for key compromise adds
    the certificate's key here in the same transaction.
    """

    spki_sha256 = models.CharField(
        max_length=64, unique=True, help_text="Lower-case hex SHA-256 of the DER SPKI."
    )
    source = models.CharField(max_length=32, choices=BlockedKeySource.choices)
    certificate = models.ForeignKey(
        Certificate,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The certificate whose revocation blocked the key, if any.",
    )
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"blocked key {self.spki_sha256[:16]}…"


class FrontServerOutcome(models.TextChoices):
    """What a front server's last run did (:class:`ca.pki.node_reports.ReportOutcome`, as stored)."""

    INSTALLED = ReportOutcome.INSTALLED.value, "Installed a new CRL bundle"
    UNCHANGED = ReportOutcome.UNCHANGED.value, "Found its CRLs current"
    FAILED = ReportOutcome.FAILED.value, "Failed"


class FrontServer(models.Model):
    """A registered front server ("node"): it proves its install reports with its Ed25519 key.

    Only the public key is stored; the private key is printed once, as the node's token, when the node is
    registered or its key rotated (``manage.py frontserver``). The ``last_*`` fields, ``interval`` and
    ``heartbeat`` are the facts of its last accepted report (:func:`ca.services.frontservers.accept_report`).
    """

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(
                rf"\A(?:{NODE_NAME.pattern})\Z",
                "A front server's name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit.",
            )
        ],
    )
    public_key = models.BinaryField(help_text="The node's raw 32-byte Ed25519 public key (RFC 8032).")
    cas = models.ManyToManyField(
        CertificateAuthority,
        related_name="front_servers",
        help_text="The CAs whose CRLs this front server must carry.",
    )
    created_at = models.DateTimeField()
    key_rotated_at = models.DateTimeField(null=True, blank=True)
    last_report_at = models.DateTimeField(null=True, blank=True)
    last_report_timestamp = models.BigIntegerField(
        null=True, blank=True, help_text="The node's own timestamp on its last accepted report (Unix time)."
    )
    last_outcome = models.CharField(max_length=16, choices=FrontServerOutcome.choices, blank=True)
    last_error = models.TextField(blank=True)
    interval = models.FloatField(null=True, blank=True, help_text="Seconds between the node's runs.")
    heartbeat = models.FloatField(
        null=True, blank=True, help_text="The longest the node stays silent, in seconds."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"front server {self.name}"


class FrontServerCrl(models.Model):
    """The CRL of ``ca`` that ``front_server`` last reported installed (signed reports only)."""

    front_server = models.ForeignKey(FrontServer, on_delete=models.CASCADE, related_name="crls")
    ca = models.ForeignKey(CertificateAuthority, on_delete=models.CASCADE, related_name="+")
    number = models.PositiveBigIntegerField(help_text="The CRL number the node has installed.")
    installed_at = models.DateTimeField(help_text="When the node first reported this number.")
    reported_at = models.DateTimeField(help_text="The last report that mentioned it.")

    class Meta:
        verbose_name = "front server CRL"
        ordering = ["front_server", "ca"]
        constraints = [
            models.UniqueConstraint(fields=["front_server", "ca"], name="front_server_crl_one_per_ca")
        ]

    def __str__(self) -> str:
        return f"{self.front_server.name} has CRL #{self.number} of CA #{self.ca_id}"


class ReportNonce(models.Model):
    """A nonce seen in a front server's report, kept while a report carrying it could still be accepted."""

    front_server = models.ForeignKey(FrontServer, on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64)
    seen_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["front_server", "nonce"], name="report_nonce_once_per_node")
        ]

    def __str__(self) -> str:
        return f"nonce {self.nonce} of front server #{self.front_server_id}"


class ScepRaCertificate(models.Model):
    """The RSA registration-authority certificate that decrypts and signs SCEP messages for a CA whose own
    key cannot (an EC CA), issued by that CA (RFC 8894 section 2.1.1; :mod:`ca.services.scep`).

    Its key is stored encrypted in the CA key folder, as CA keys are. The newest one of a CA is used while
    it is valid; a new one is made on first use, before the current one expires, or by ``manage.py scep_ra``.
    """

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="scep_ras")
    certificate_der = models.BinaryField()
    key_file = models.CharField(
        max_length=255, help_text="File name of the encrypted RA key in the CA key folder."
    )
    serial = models.CharField(max_length=42)
    subject = models.CharField(max_length=512)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    fingerprint_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "SCEP RA certificate"
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["ca", "serial"], name="scep_ra_unique_serial_per_ca")]

    def __str__(self) -> str:
        return f"SCEP RA of {self.ca.slug} #{self.serial}"

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(bytes(self.certificate_der))
