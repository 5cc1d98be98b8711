"""The end-user pages: dashboard, new request, request and certificate pages, downloads, revoke, renew, help.

Thin views over :mod:`enroll.flows` and :mod:`ca.services`. Access rule: a user sees only their own
requests and certificates (404 otherwise). Staff with the model's view permission may also *view* and
*download* anyone's (as the architecture allows downloads to staff); revoking and renewing here stay with
the owner (administrators revoke on their own screen). Every state change is a POST with CSRF.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_safe

from accounts.ratelimits import rate_limited
from ca.clock import utcnow
from ca.errors import AlreadyRevoked, CAError, CrlNotPublished
from ca.models import Certificate, CertificateAuthority, CertificateStatus
from ca.pki.errors import RequestRefused
from ca.services.export import ALL_EXPORT_FORMATS, export_certificate
from ca.types import Account
from enroll import flows
from enroll.forms import CsrForm, RevokeForm
from enroll.models import RENEWING_STATUSES, EnrollmentRequest, RequestStatus

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
DOWNLOADS = (
    ("pem", "Certificate (PEM)", "For nginx, curl, OpenSSL and most tools."),
    ("chain", "Certificate with CA chain (PEM)", "Your certificate followed by the CA certificates."),
    ("der", "Certificate (DER, .cer)", "Binary form, for Windows and Java tools."),
    ("pkcs7", "PKCS#7 bundle (.p7b)", "Certificate and chain, no key: for Windows and Java key stores."),
)


# --- access --------------------------------------------------------------------------------------


def _may_view_all(user: Account, permission: str) -> bool:
    return bool(user.is_staff and user.has_perm(permission))


def _certificates(user: Account, *, view_only: bool) -> QuerySet[Certificate]:
    """The certificates ``user`` may open: their own, or (viewing only) any for staff allowed to."""
    certificates = Certificate.objects.issued().select_related("ca", "owner", "revocation")
    if view_only and _may_view_all(user, "ca.view_certificate"):
        return certificates
    return certificates.filter(owner=user)


def _requests(user: Account) -> QuerySet[EnrollmentRequest]:
    requests = EnrollmentRequest.objects.select_related("owner", "decided_by", "certificate", "renewal_of")
    if _may_view_all(user, "enroll.view_enrollmentrequest"):
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
    owner = certificate.owner.get_username() if certificate.owner is not None else ""
    return f"{slugify(owner) or 'certificate'}-{certificate.serial[:8].lower()}"


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


def _row(certificate: Certificate, *, now: dt.datetime) -> CertificateRow:
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


def _dashboard(user: Account, *, now: dt.datetime) -> Dashboard:
    certificates = (
        Certificate.objects.issued()
        .filter(owner=user)
        .select_related("ca", "revocation")
        .prefetch_related(Prefetch("renewals", queryset=EnrollmentRequest.objects.order_by("created_at")))
    )
    board = Dashboard(
        rows=[_row(c, now=now) for c in certificates],
        requests=list(
            EnrollmentRequest.objects.filter(owner=user).select_related("certificate", "renewal_of")
        ),
    )
    if (blocker := flows.submission_blocker(user)) is not None:
        board.steps.append(NextStep(blocker, reverse("accounts:profile"), "Go to your profile", "warning"))
        return board
    for pending in (r for r in board.requests if r.is_pending):
        board.steps.append(
            NextStep(
                f"Request #{pending.pk} is waiting for an administrator's approval. You will get an e-mail "
                "when it is decided.",
                reverse("portal:request-detail", args=[pending.pk]),
                "See the request",
            )
        )
    statuses = {row.certificate.pk: row.status for row in board.rows}
    for issued in board.requests:
        if (
            issued.status == RequestStatus.ISSUED
            and issued.certificate is not None
            and issued.decided_at is not None
            and now - issued.decided_at < dt.timedelta(days=7)
            and statuses.get(issued.certificate.pk) == CertificateStatus.VALID
        ):
            board.steps.append(
                NextStep(
                    f"Your certificate from request #{issued.pk} is ready: download it and combine it with "
                    "your private key.",
                    reverse("portal:certificate-detail", args=[issued.certificate.pk]),
                    "Download your certificate",
                    "success",
                )
            )
    for row in board.rows:
        if row.renew_soon:
            board.steps.append(
                NextStep(
                    f"Certificate {row.certificate.serial[:16]}… expires in {row.days_left} "
                    f"day{'s' if row.days_left != 1 else ''}. Renew it before then.",
                    reverse("portal:certificate-renew", args=[row.certificate.pk]),
                    "Renew",
                    "warning",
                )
            )
    latest = board.requests[0] if board.requests else None
    if latest is not None and latest.status in (RequestStatus.REJECTED, RequestStatus.FAILED):
        board.steps.append(
            NextStep(
                f"Your latest request #{latest.pk} was {latest.get_status_display().lower()}: "
                f"{latest.reason}",
                reverse("portal:request-new"),
                "Submit a new request",
                "danger",
            )
        )
    has_valid = any(row.status == CertificateStatus.VALID for row in board.rows)
    if not has_valid and not any(r.is_pending for r in board.requests):
        board.steps.append(
            NextStep(
                "You have no valid certificate. Make a key and a certificate request on your computer and "
                "submit the request.",
                reverse("portal:request-new"),
                "Submit a request",
                "primary",
            )
        )
    return board


# --- pages ---------------------------------------------------------------------------------------


@require_safe
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    board = _dashboard(portal_user(request), now=utcnow())
    return render(
        request,
        "enroll/dashboard.html",
        {"nav": "dashboard", "board": board},
    )


@sensitive_post_parameters("csr_text")
@require_http_methods(["GET", "POST"])
@login_required
@rate_limited("submit")
def request_new(request: HttpRequest) -> HttpResponse:
    user = portal_user(request)
    blocker = flows.submission_blocker(user)
    form = CsrForm()
    if request.method == "POST" and blocker is None:
        form = CsrForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                submitted = flows.submit_csr(owner=user, data=form.submission(), require_verified_email=True)
            except RequestRefused as refused:
                form.refuse_request(refused)
            except flows.SubmissionRefused as refused:
                form.refuse(str(refused))
            else:
                messages.success(
                    request,
                    f"Request #{submitted.pk} ({submitted.key_description}) was submitted. An administrator "
                    "will look at it; you will get an e-mail when it is decided.",
                )
                return redirect("portal:request-detail", pk=submitted.pk)
    return render(
        request,
        "enroll/request_new.html",
        {"nav": "new", "form": form, "blocker": blocker, **_key_commands(user.get_username())},
    )


def _key_commands(username: str) -> dict[str, str]:
    """Ready-to-paste commands that make a key and a CSR on the user's own machine."""
    name = key_name(username)
    return {
        "openssl_command": _openssl_new_key(name, name),
        "keytool_commands": (
            f"keytool -genkeypair -alias {name} -keyalg EC -groupname secp256r1 \\\n"
            f"  -keystore {name}.p12 -storetype PKCS12 -dname CN={name}\n"
            f"keytool -certreq -alias {name} -keystore {name}.p12 -file {name}.csr"
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


@require_safe
@login_required
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    enrollment = get_object_or_404(_requests(user), pk=pk)
    return render(
        request,
        "enroll/request_detail.html",
        {
            "nav": "dashboard",
            "enrollment": enrollment,
            "badge": REQUEST_BADGES[enrollment.status],
            "is_owner": enrollment.owner_id == user.pk,
            "organization": settings.ENROLL_ORGANIZATION,
            "auto_approved": enrollment.decided_by_id is None and enrollment.renewal_of_id is not None,
        },
    )


@require_safe
@login_required
def certificate_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    now = utcnow()
    certificate = get_object_or_404(_certificates(user, view_only=True).prefetch_related("renewals"), pk=pk)
    row = _row(certificate, now=now)
    chain = [
        {
            "ca": ca,
            "pem_url": ca.public_url("ca:cert-pem"),
            "crl_url": ca.public_url("ca:crl-pem"),
        }
        for ca in certificate.ca.chain()
    ]
    issued_for = (
        EnrollmentRequest.objects.filter(certificate=certificate).select_related("renewal_of").first()
    )
    is_owner = certificate.owner_id == user.pk
    return render(
        request,
        "enroll/certificate_detail.html",
        {
            "nav": "dashboard",
            "certificate": certificate,
            "row": row,
            "fingerprint_colons": colon_hex(certificate.fingerprint_sha256),
            "revocation": getattr(certificate, "revocation", None),
            "issued_for": issued_for,
            "chain": chain,
            "downloads": DOWNLOADS,
            "stem": file_stem(certificate),
            "key_name": key_name(certificate.owner.get_username() if certificate.owner else ""),
            "is_owner": is_owner,
            "can_revoke": is_owner
            and row.status in (CertificateStatus.VALID, CertificateStatus.NOT_YET_VALID),
            "can_renew": is_owner and row.renewal is None,
        },
    )


@require_safe
@login_required
def certificate_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    if fmt not in ALL_EXPORT_FORMATS:
        raise Http404("No such format.")
    certificate = get_object_or_404(_certificates(portal_user(request), view_only=True), pk=pk)
    export = export_certificate(certificate=certificate, fmt=fmt)
    response = HttpResponse(export.content, content_type=export.content_type)
    disposition = content_disposition_header(
        # x509-user-cert is inline: a legacy keygen browser installs it next to its key
        as_attachment=fmt != "x509-user-cert",
        filename=f"{file_stem(certificate)}.{export.extension}",
    )
    assert disposition is not None  # only None when neither attachment nor a filename is asked for
    response["Content-Disposition"] = disposition
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-cache"
    return response


@require_http_methods(["GET", "POST"])
@login_required
def certificate_revoke(request: HttpRequest, pk: int) -> HttpResponseBase:
    user = portal_user(request)
    certificate = get_object_or_404(_certificates(user, view_only=False), pk=pk)
    detail = reverse("portal:certificate-detail", args=[certificate.pk])
    if hasattr(certificate, "revocation"):
        messages.info(request, f"Certificate {certificate.serial} is revoked already.")
        return redirect(detail)
    status = certificate.status_at(utcnow())
    if status == CertificateStatus.EXPIRED:
        messages.info(
            request, "This certificate has expired: it no longer works anywhere, nothing to revoke."
        )
        return redirect(detail)
    form = RevokeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            flows.revoke_own_certificate(
                owner=user,
                certificate=certificate,
                reason=form.reason_value(),
                invalidity_date=form.invalidity_datetime(),
            )
        except CrlNotPublished as exc:
            logger.error("self-revocation by %s: %s", user.get_username(), exc)
            messages.warning(
                request,
                f"Certificate {certificate.serial} is revoked, but the new revocation list could not be "
                "published yet. The administrators can see it in the log; servers refuse the certificate "
                "once the list is published.",
            )
            return redirect(detail)
        except AlreadyRevoked:
            messages.info(request, f"Certificate {certificate.serial} is revoked already.")
            return redirect(detail)
        except (CAError, flows.FlowError) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Certificate {certificate.serial} is revoked. It is on the published revocation list now; "
                "servers that check the list refuse it from their next update.",
            )
            return redirect(detail)
    return render(
        request,
        "enroll/certificate_revoke.html",
        {"nav": "dashboard", "certificate": certificate, "form": form},
    )


@sensitive_post_parameters("csr_text")
@require_http_methods(["GET", "POST"])
@login_required
@rate_limited("submit")
def certificate_renew(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    now = utcnow()
    certificate = get_object_or_404(_certificates(user, view_only=False).prefetch_related("renewals"), pk=pk)
    row = _row(certificate, now=now)
    email_blocker = flows.submission_blocker(user)
    blocker = email_blocker or flows.renewal_blocker(certificate)
    form = CsrForm(submit_label="Submit renewal")
    if request.method == "POST" and blocker is None:
        form = CsrForm(request.POST, request.FILES, submit_label="Submit renewal")
        if form.is_valid():
            try:
                renewal = flows.submit_renewal(owner=user, certificate=certificate, data=form.submission())
            except RequestRefused as refused:
                form.refuse_request(refused)
            except flows.SubmissionRefused as refused:
                form.refuse(str(refused))
            else:
                return _after_renewal(request, renewal)
    auto_approves = settings.ENROLL_AUTO_APPROVE_RENEWALS and row.status == CertificateStatus.VALID
    return render(
        request,
        "enroll/certificate_renew.html",
        {
            "nav": "dashboard",
            "certificate": certificate,
            "row": row,
            "form": form,
            "blocker": blocker,
            "user_verified": email_blocker is None,
            "auto_approves": auto_approves,
            **_key_commands(user.get_username()),
        },
    )


def _after_renewal(request: HttpRequest, renewal: EnrollmentRequest) -> HttpResponse:
    if renewal.status == RequestStatus.ISSUED and renewal.certificate is not None:
        messages.success(
            request,
            "Your certificate was renewed: here is the new one. Install it, then revoke the old one as "
            "superseded.",
        )
        return redirect("portal:certificate-detail", pk=renewal.certificate.pk)
    if renewal.status == RequestStatus.FAILED:
        messages.error(
            request, f"Your renewal was approved, but the certificate could not be issued. {renewal.reason}"
        )
    else:
        messages.success(
            request,
            f"Renewal request #{renewal.pk} was submitted. An administrator will look at it; you will get an "
            "e-mail when it is decided.",
        )
    return redirect("portal:request-detail", pk=renewal.pk)


@require_safe
def help_page(request: HttpRequest) -> HttpResponse:
    authorities = [
        {
            "ca": ca,
            "cert_pem": ca.public_url("ca:cert-pem"),
            "cert_der": ca.public_url("ca:cert-der"),
            "crl_pem": ca.public_url("ca:crl-pem"),
            "crl_der": ca.public_url("ca:crl-der"),
        }
        for ca in CertificateAuthority.objects.select_related("parent").order_by("created_at")
    ]
    user = request.user
    commands = _key_commands(user.get_username() if user.is_authenticated else "me")
    return render(
        request,
        "enroll/help.html",
        {
            "nav": "help",
            "authorities": authorities,
            "organization": settings.ENROLL_ORGANIZATION,
            "validity_days": settings.ENROLL_CERT_VALIDITY_DAYS,
            "crl_hours": settings.ENROLL_CRL_LIFETIME_HOURS,
            **commands,
        },
    )
