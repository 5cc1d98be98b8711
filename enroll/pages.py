"""What the end-user pages show, and who may see what.

Access rule: a user sees only their own requests and certificates (404 otherwise). Staff with the
model's view permission may also *view* and *download* anyone's. Used by :mod:`enroll.views` and
:mod:`enroll.certificate_views`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import Promise
from django.utils.text import slugify
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from ca.models import Certificate, CertificateStatus
from ca.types import Account
from enroll import flows
from enroll.models import RENEWING_STATUSES, EnrollmentRequest, FirstDownload, RequestStatus

logger = logging.getLogger(__name__)


#: Days before expiry from which the portal suggests renewing (the first reminder e-mail goes out then).
RENEW_SOON_DAYS = 30

REQUEST_BADGES: dict[str, str] = {
    RequestStatus.SUBMITTED: "text-bg-warning",
    RequestStatus.APPROVED: "text-bg-info",
    RequestStatus.ISSUED: "text-bg-success",
    RequestStatus.REJECTED: "text-bg-danger",
    RequestStatus.FAILED: "text-bg-danger",
}
CERTIFICATE_BADGES: dict[str, str] = {
    CertificateStatus.VALID: "text-bg-success",
    CertificateStatus.REVOKED: "text-bg-danger",
    CertificateStatus.EXPIRED: "text-bg-secondary",
    CertificateStatus.NOT_YET_VALID: "text-bg-info",
}
DOWNLOADS: tuple[tuple[str, Promise, Promise], ...] = (
    ("pem", _("Certificate (PEM)"), _("For nginx, curl, OpenSSL and most tools.")),
    ("chain", _("Certificate with CA chain (PEM)"), _("Your certificate followed by the CA certificates.")),
    ("der", _("Certificate (DER, .cer)"), _("Binary form, for Windows and Java tools.")),
    (
        "pkcs7",
        _("PKCS#7 bundle (.p7b)"),
        _("Certificate and chain, no key: for Windows and Java key stores."),
    ),
)


# --- access --------------------------------------------------------------------------------------


def may_view_all(user: Account, permission: str) -> bool:
    return bool(user.is_staff and user.has_perm(permission))


def visible_certificates(user: Account, *, view_only: bool) -> QuerySet[Certificate]:
    """The certificates ``user`` may open: their own, or (viewing only) any for staff allowed to."""
    certificates = Certificate.objects.issued().select_related("ca", "owner", "revocation")
    if view_only and may_view_all(user, "ca.view_certificate"):
        return certificates
    return certificates.filter(owner=user)


def visible_requests(user: Account) -> QuerySet[EnrollmentRequest]:
    requests = EnrollmentRequest.objects.select_related("owner", "decided_by", "certificate", "renewal_of")
    if may_view_all(user, "enroll.view_enrollmentrequest"):
        return requests
    return requests.filter(owner=user)


def portal_user(request: HttpRequest) -> Account:
    """The logged-in user of a page behind ``login_required``."""
    user = request.user
    assert user.is_authenticated  # login_required
    return user


# --- what the pages show -------------------------------------------------------------------------


def colon_hex(hex_text: str) -> str:
    """``ab12...`` as ``AB:12:...``, the way ``openssl x509 -fingerprint`` prints fingerprints."""
    text = hex_text.upper()
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def key_name(username: str) -> str:
    """The stem of the key and request files in the portal's commands (``alice.key``, ``alice.csr``)."""
    return slugify(username) or "me"


def file_stem(certificate: Certificate) -> str:
    """The stem of the certificate's download files: ``alice-work-laptop-1a2b3c4d`` (owner, device name if
    any, the serial's first 8 hex digits), slugified so it is safe as a file name everywhere."""
    owner = certificate.owner.get_username() if certificate.owner is not None else ""
    device = slugify(certificate.device_name)
    return "-".join(
        part for part in (slugify(owner) or "certificate", device, certificate.serial[:8].lower()) if part
    )


@dataclass
class CertificateRow:
    certificate: Certificate
    status: CertificateStatus
    badge: str
    days_left: int
    renewal: EnrollmentRequest | None  # the pending or issued renewal, if any

    @property
    def renew_soon(self) -> bool:
        return (
            self.status == CertificateStatus.VALID
            and self.days_left <= RENEW_SOON_DAYS
            and self.renewal is None
        )


def certificate_row(certificate: Certificate, *, now: dt.datetime) -> CertificateRow:
    status = certificate.status_at(now)
    renewals = [r for r in certificate.renewals.all() if r.status in RENEWING_STATUSES]
    return CertificateRow(
        certificate=certificate,
        status=status,
        badge=CERTIFICATE_BADGES[status],
        days_left=max(0, (certificate.not_after - now).days),
        renewal=max(renewals, key=lambda r: r.created_at) if renewals else None,
    )


@dataclass
class RequestRow:
    request: EnrollmentRequest
    badge: str


@dataclass
class NextStep:
    text: str
    link: str = ""
    link_text: str = ""
    level: str = "info"


@dataclass
class Dashboard:
    rows: list[CertificateRow] = field(default_factory=list)
    requests: list[EnrollmentRequest] = field(default_factory=list)
    steps: list[NextStep] = field(default_factory=list)

    @property
    def request_rows(self) -> list[RequestRow]:
        return [RequestRow(request=r, badge=REQUEST_BADGES[r.status]) for r in self.requests]


def dashboard_of(user: Account, *, now: dt.datetime) -> Dashboard:
    certificates = (
        Certificate.objects.issued()
        .filter(owner=user)
        .select_related("ca", "revocation", "first_download")
        .prefetch_related(
            Prefetch(
                "renewals",
                queryset=EnrollmentRequest.objects.select_related("certificate__first_download").order_by(
                    "created_at"
                ),
            )
        )
    )
    board = Dashboard(
        rows=[certificate_row(c, now=now) for c in certificates],
        requests=list(
            EnrollmentRequest.objects.filter(owner=user).select_related("certificate", "renewal_of")
        ),
    )
    if (blocker := flows.submission_blocker(user)) is not None:
        board.steps.append(
            NextStep(blocker, reverse("accounts:profile"), gettext("Go to your profile"), "warning")
        )
        return board
    for pending in (r for r in board.requests if r.is_pending):
        board.steps.append(
            NextStep(
                gettext(
                    "Request #%(number)s is waiting for an administrator's approval. You will get an e-mail "
                    "when it is decided."
                )
                % {"number": pending.pk},
                reverse("portal:request-detail", args=[pending.pk]),
                gettext("See the request"),
            )
        )
    issued_by = {r.certificate_id: r for r in board.requests if r.certificate_id is not None}
    for row in board.rows:
        if (step := certificate_step(row, issued_by.get(row.certificate.pk))) is not None:
            board.steps.append(step)
    latest = board.requests[0] if board.requests else None
    if latest is not None and latest.status in (RequestStatus.REJECTED, RequestStatus.FAILED):
        board.steps.append(
            NextStep(
                (
                    gettext("Your latest request #%(number)s was rejected: %(reason)s")
                    if latest.status == RequestStatus.REJECTED
                    else gettext("Your latest request #%(number)s failed: %(reason)s")
                )
                % {"number": latest.pk, "reason": latest.reason},
                reverse("portal:request-new"),
                gettext("Submit a new request"),
                "danger",
            )
        )
    has_valid = any(row.status == CertificateStatus.VALID for row in board.rows)
    if not has_valid and not any(r.is_pending for r in board.requests):
        board.steps.append(
            NextStep(
                gettext(
                    "You have no valid certificate. Make a key and a certificate request on your computer "
                    "and submit the request."
                ),
                reverse("portal:request-new"),
                gettext("Submit a request"),
                "primary",
            )
        )
    return board


def certificate_step(row: CertificateRow, issued_for: EnrollmentRequest | None) -> NextStep | None:
    """The one step a certificate asks of its owner, if any; each ends once it is done:

    * renewed, the new certificate downloaded, and this one still valid: revoke this one (until revoked
      or expired);
    * valid, expiring within :data:`RENEW_SOON_DAYS` and not renewed: renew it (until renewed);
    * valid and never downloaded by its owner: download it (until the first download, see
      :class:`enroll.models.FirstDownload`).

    Nothing for a revoked or expired certificate, nor while its renewal waits for a decision (the request's
    own step says so), nor before the renewed certificate was downloaded (that one says "download it").
    """
    certificate = row.certificate
    if row.status != CertificateStatus.VALID:
        return None
    renewed = row.renewal.certificate if row.renewal is not None else None
    if renewed is not None:
        if not _downloaded(renewed):
            return None
        return NextStep(
            gettext(
                "Certificate %(certificate)s was renewed and you have downloaded the new one. Once the new "
                "one works everywhere, revoke this one as superseded."
            )
            % {"certificate": _named(certificate.device_name, f"{certificate.serial[:16]}…")},
            reverse("portal:certificate-revoke", args=[certificate.pk]),
            gettext("Revoke the old certificate"),
            "info",
        )
    if row.renewal is not None:
        return None
    if row.renew_soon:
        return NextStep(
            ngettext(
                "Certificate %(certificate)s expires in %(days)d day. Renew it before then.",
                "Certificate %(certificate)s expires in %(days)d days. Renew it before then.",
                row.days_left,
            )
            % {
                "certificate": _named(certificate.device_name, f"{certificate.serial[:16]}…"),
                "days": row.days_left,
            },
            reverse("portal:certificate-renew", args=[certificate.pk]),
            gettext("Renew"),
            "warning",
        )
    if not _downloaded(certificate):
        origin = (
            gettext("from request #%(number)s") % {"number": issued_for.pk}
            if issued_for is not None
            else f"{certificate.serial[:16]}…"
        )
        return NextStep(
            gettext(
                "Your certificate %(certificate)s is ready: download it and combine it with your private key."
            )
            % {"certificate": _named(certificate.device_name, origin)},
            reverse("portal:certificate-detail", args=[certificate.pk]),
            gettext("Download your certificate"),
            "success",
        )
    return None


def _downloaded(certificate: Certificate) -> bool:
    """Whether the owner downloaded ``certificate`` (or it was issued before downloads were recorded)."""
    try:
        certificate.first_download  # noqa: B018 (the reverse one-to-one raises when there is no row)
    except FirstDownload.DoesNotExist:
        return False
    return True


def _named(device_name: str, otherwise: str) -> str:
    """How a sentence names a certificate: ``for Work laptop (<otherwise>)``, or ``otherwise`` alone."""
    if not device_name:
        return otherwise
    return gettext("for %(device)s (%(otherwise)s)") % {"device": device_name, "otherwise": otherwise}


def key_commands(username: str) -> dict[str, str]:
    """Ready-to-paste commands that make a key and a CSR on the user's own machine."""
    name = key_name(username)
    return {
        "openssl_command": _openssl_new_key(name, name),
        "keytool_commands": (
            f"keytool -genkeypair -alias {name} -keyalg EC -groupname secp256r1 \\\n"
            f"  -keystore {name}-keystore.p12 -storetype PKCS12 -dname CN={name}\n"
            f"keytool -certreq -alias {name} -keystore {name}-keystore.p12 -file {name}.csr"
        ),
        "key_name": name,
        # for a renewal: a new key must not overwrite the one the current certificate still uses
        "openssl_new_key_command": _openssl_new_key(name, f"{name}-new"),
    }


def _openssl_new_key(name: str, stem: str) -> str:
    return (
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\\n"
        f'  -keyout {stem}.key -out {stem}.csr -subj "/CN={name}"'
    )


def device_saved(name: str) -> str:
    """The message after the owner saved a device name (an empty one removes it)."""
    if not name:
        return gettext("Device name removed.")
    return gettext("Device name saved: %(name)s.") % {"name": name}
