"""The certificate pages: details, downloads, revoke and renew (the owner; staff may view and download).

Thin views over :mod:`enroll.flows` and :mod:`ca.services`; what they show is in :mod:`enroll.pages`.
Every state change is a POST with CSRF.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.ratelimits import allowance_message, rate_limited
from ca.clock import utcnow
from ca.errors import AlreadyRevoked, CAError, CrlNotPublished
from ca.models import Certificate, CertificateStatus, RevocationReason
from ca.pki.errors import RequestRefused
from ca.services.export import ALL_EXPORT_FORMATS, export_certificate
from ca.services.revocation import key_siblings
from ca.types import Account
from enroll import flows
from enroll.flows.submission import set_device_name
from enroll.forms import CsrForm, DeviceNameForm, RevokeForm
from enroll.install import P12_FOR, chosen_platform, platform_choices
from enroll.models import EnrollmentRequest, FirstDownload, RequestStatus
from enroll.pages import (
    DOWNLOADS,
    certificate_row,
    colon_hex,
    device_saved,
    file_stem,
    key_commands,
    key_name,
    portal_user,
    visible_certificates,
)

logger = logging.getLogger(__name__)

#: The extra download of a certificate issued for an SPKAC (format, label, description).
SPKAC_DOWNLOAD = (
    "x509-user-cert",
    _("For the legacy keygen client (application/x-x509-user-cert)"),
    _("The DER certificate as old <keygen> browsers expect it: they install it next to the key they made."),
)


@require_safe
@login_required
def certificate_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    certificate = get_object_or_404(
        visible_certificates(user, view_only=True).prefetch_related("renewals"), pk=pk
    )
    return _certificate_page(request, certificate, user=user)


@require_POST
@login_required
def certificate_device(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner changes the device name of their certificate (and of the request it was issued for)."""
    user = portal_user(request)
    certificate = get_object_or_404(
        visible_certificates(user, view_only=False).prefetch_related("renewals"), pk=pk
    )
    form = DeviceNameForm(request.POST)
    if form.is_valid():
        try:
            name = set_device_name(
                owner=user, certificate=certificate, device_name=form.cleaned_data["device_name"]
            )
        except flows.FlowError as refused:
            form.add_error("device_name", str(refused))
        else:
            messages.success(request, device_saved(name))
            return redirect("portal:certificate-detail", pk=certificate.pk)
    return _certificate_page(request, certificate, user=user, device_form=form, status=400)


def _certificate_page(
    request: HttpRequest,
    certificate: Certificate,
    *,
    user: Account,
    device_form: DeviceNameForm | None = None,
    status: int = 200,
) -> HttpResponse:
    row = certificate_row(certificate, now=utcnow())
    revocation = getattr(certificate, "revocation", None)
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
    if device_form is None and is_owner:
        device_form = DeviceNameForm(initial={"device_name": certificate.device_name})
    platform, asked = chosen_platform(request.GET.get("platform"), request.headers.get("User-Agent", ""))
    choices = platform_choices(platform)
    (chosen,) = [choice for choice in choices if choice.chosen]
    downloads = list(DOWNLOADS)
    if issued_for is not None and issued_for.kind == "spkac":
        downloads.append(SPKAC_DOWNLOAD)
    # a revoked or expired certificate can no longer be installed: no install help, its files for the record
    install_help = revocation is None and row.status in (
        CertificateStatus.VALID,
        CertificateStatus.NOT_YET_VALID,
    )
    needed = chosen.files if install_help else ()
    return render(
        request,
        "enroll/certificate_detail.html",
        {
            "nav": "dashboard",
            "certificate": certificate,
            "row": row,
            "fingerprint_colons": colon_hex(certificate.fingerprint_sha256),
            "revocation": revocation,
            "issued_for": issued_for,
            "chain": chain,
            "install_help": install_help,
            "platforms": choices,
            "platform": chosen,
            "platform_asked": asked,
            "p12_legacy": P12_FOR.get(platform) == "legacy",
            "file_downloads": sorted(
                (d for d in downloads if d[0] in needed), key=lambda d: needed.index(d[0])
            ),
            "other_downloads": [d for d in downloads if d[0] not in needed],
            "p12_platforms": " ".join(str(p) for p in P12_FOR),
            "stem": file_stem(certificate),
            "key_name": key_name(certificate.owner.get_username() if certificate.owner else ""),
            "is_owner": is_owner,
            "can_revoke": is_owner
            and row.status in (CertificateStatus.VALID, CertificateStatus.NOT_YET_VALID),
            "can_renew": is_owner and row.renewal is None,
            "device_form": device_form,
            "device_action": reverse("portal:certificate-device", args=[certificate.pk]),
        },
        status=status,
    )


@require_safe
@login_required
def certificate_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    if fmt not in ALL_EXPORT_FORMATS:
        raise Http404("No such format.")
    user = portal_user(request)
    certificate = get_object_or_404(visible_certificates(user, view_only=True), pk=pk)
    export = export_certificate(certificate=certificate, fmt=fmt)
    # a HEAD only asks about the file; the .p12 builder's look-up when the page opens (static/portal/p12.js)
    # only looks for the key in the browser: neither is the owner taking the certificate
    if request.method == "GET" and "X-Enroll-Lookup" not in request.headers:
        FirstDownload.record(certificate=certificate, by=user, fmt=fmt, now=utcnow())
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
    certificate = get_object_or_404(visible_certificates(user, view_only=False), pk=pk)
    detail = reverse("portal:certificate-detail", args=[certificate.pk])
    if hasattr(certificate, "revocation"):
        messages.info(
            request, gettext("Certificate %(serial)s is revoked already.") % {"serial": certificate.serial}
        )
        return redirect(detail)
    status = certificate.status_at(utcnow())
    if status == CertificateStatus.EXPIRED:
        messages.info(
            request, gettext("This certificate has expired: it no longer works anywhere, nothing to revoke.")
        )
        return redirect(detail)
    form = RevokeForm(request.POST or None)
    siblings = key_siblings(certificate)
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
                gettext(
                    "Certificate %(serial)s is revoked, but the new revocation list could not be published "
                    "yet. The administrators can see it in the log; servers refuse the certificate once the "
                    "list is published."
                )
                % {"serial": certificate.serial},
            )
            return redirect(detail)
        except AlreadyRevoked:
            messages.info(
                request,
                gettext("Certificate %(serial)s is revoked already.") % {"serial": certificate.serial},
            )
            return redirect(detail)
        except (CAError, flows.FlowError) as exc:
            form.add_error(None, str(exc))
        else:
            also = ""
            if siblings and form.reason_value() == RevocationReason.KEY_COMPROMISE:
                also = " " + ngettext(
                    "So is the other certificate on the same key: %(serials)s.",
                    "So are the other certificates on the same key: %(serials)s.",
                    len(siblings),
                ) % {"serials": _serials(siblings)}
            messages.success(
                request,
                gettext(
                    "Certificate %(serial)s is revoked.%(also)s It is on the published revocation list now; "
                    "servers that check the list refuse it from their next update."
                )
                % {"serial": certificate.serial, "also": also},
            )
            return redirect(detail)
    return render(
        request,
        "enroll/certificate_revoke.html",
        {
            "nav": "dashboard",
            "certificate": certificate,
            "form": form,
            # other accounts' certificates on this key (from before one key meant one account) are counted,
            # never shown
            "siblings": [s for s in siblings if s.owner_id == user.pk],
            "others_on_key": sum(1 for s in siblings if s.owner_id != user.pk),
        },
    )


def _serials(certificates: list[Certificate]) -> str:
    return ", ".join(certificate.serial for certificate in certificates)


@sensitive_post_parameters("csr_text")
@require_http_methods(["GET", "POST"])
@login_required
@rate_limited("submit", keep="csr_text")
def certificate_renew(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    now = utcnow()
    certificate = get_object_or_404(
        visible_certificates(user, view_only=False).prefetch_related("renewals"), pk=pk
    )
    row = certificate_row(certificate, now=now)
    email_blocker = flows.submission_blocker(user)
    blocker = email_blocker or flows.renewal_blocker(certificate)
    form = CsrForm(submit_label=gettext("Submit renewal"), initial={"device_name": certificate.device_name})
    tries_left = ""
    if request.method == "POST" and blocker is None:
        form = CsrForm(request.POST, request.FILES, submit_label=gettext("Submit renewal"))
        if form.is_valid():
            try:
                renewal = flows.submit_renewal(
                    owner=user,
                    certificate=certificate,
                    data=form.submission(),
                    device_name=form.given_device_name(),
                )
            except RequestRefused as refused:
                form.refuse_request(refused)
            except flows.SubmissionRefused as refused:
                form.refuse(str(refused))
            else:
                return _after_renewal(request, renewal)
        tries_left = allowance_message(request, "submit")
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
            "tries_left": tries_left,
            **key_commands(user.get_username()),
        },
    )


def _after_renewal(request: HttpRequest, renewal: EnrollmentRequest) -> HttpResponse:
    if renewal.status == RequestStatus.ISSUED and renewal.certificate is not None:
        messages.success(
            request,
            gettext(
                "Your certificate was renewed: here is the new one. Install it, then revoke the old one as "
                "superseded."
            ),
        )
        return redirect("portal:certificate-detail", pk=renewal.certificate.pk)
    if renewal.status == RequestStatus.FAILED:
        messages.error(
            request,
            gettext("Your renewal was approved, but the certificate could not be issued. %(reason)s")
            % {"reason": renewal.reason},
        )
    else:
        messages.success(
            request,
            gettext(
                "Renewal request #%(number)s was submitted. An administrator will look at it; you will get "
                "an e-mail when it is decided."
            )
            % {"number": renewal.pk},
        )
    return redirect("portal:request-detail", pk=renewal.pk)
