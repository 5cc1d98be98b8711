"""The end-user pages: dashboard, new request, request page, help (certificates: enroll.certificate_views).

Thin views over :mod:`enroll.flows` and :mod:`ca.services`. Access rule: a user sees only their own
requests and certificates (404 otherwise). Staff with the model's view permission may also *view* and
*download* anyone's (as the architecture allows downloads to staff); revoking and renewing here stay with
the owner (administrators revoke on their own screen). Every state change is a POST with CSRF.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.ratelimits import allowance_message, rate_limited
from ca.clock import utcnow
from ca.models import CertificateAuthority
from ca.pki.errors import RequestRefused
from ca.types import Account
from enroll import flows
from enroll.flows.submission import set_device_name
from enroll.forms import CsrForm, DeviceNameForm
from enroll.models import EnrollmentRequest
from enroll.pages import (
    REQUEST_BADGES,
    dashboard_of,
    device_saved,
    key_commands,
    portal_user,
    visible_requests,
)

logger = logging.getLogger(__name__)

# --- pages ---------------------------------------------------------------------------------------


@require_safe
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    board = dashboard_of(portal_user(request), now=utcnow())
    return render(
        request,
        "enroll/dashboard.html",
        {"nav": "dashboard", "board": board},
    )


@sensitive_post_parameters("csr_text")
@require_http_methods(["GET", "POST"])
@login_required
@rate_limited("submit", keep="csr_text")
def request_new(request: HttpRequest) -> HttpResponse:
    """The three ways to a certificate (a CSR from a file, a key made in this browser, an SPKAC) and the
    CSR form. A refused submission still counted against the limit: the page says how many tries are left."""
    user = portal_user(request)
    blocker = flows.submission_blocker(user)
    form = CsrForm()
    tries_left = ""
    if request.method == "POST" and blocker is None:
        form = CsrForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                submitted = flows.submit_csr(
                    owner=user,
                    data=form.submission(),
                    require_verified_email=True,
                    device_name=form.given_device_name(),
                )
            except RequestRefused as refused:
                form.refuse_request(refused)
            except flows.SubmissionRefused as refused:
                form.refuse(str(refused))
            else:
                messages.success(
                    request,
                    gettext(
                        "Request #%(number)s (%(key)s) was submitted. An administrator will look at it; you "
                        "will get an e-mail when it is decided."
                    )
                    % {"number": submitted.pk, "key": submitted.key_description},
                )
                return redirect("portal:request-detail", pk=submitted.pk)
        tries_left = allowance_message(request, "submit")
    return render(
        request,
        "enroll/request_new.html",
        {
            "nav": "new",
            "form": form,
            "blocker": blocker,
            "tries_left": tries_left,
            **key_commands(user.get_username()),
        },
    )


@require_safe
@login_required
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    enrollment = get_object_or_404(visible_requests(user), pk=pk)
    return _request_page(request, enrollment, user=user)


@require_POST
@login_required
def request_device(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner changes the device name of their request (and of its certificate, if issued)."""
    user = portal_user(request)
    enrollment = get_object_or_404(visible_requests(user).filter(owner=user), pk=pk)
    form = DeviceNameForm(request.POST)
    if form.is_valid():
        try:
            name = set_device_name(
                owner=user, request=enrollment, device_name=form.cleaned_data["device_name"]
            )
        except flows.FlowError as refused:
            form.add_error("device_name", str(refused))
        else:
            messages.success(request, device_saved(name))
            return redirect("portal:request-detail", pk=enrollment.pk)
    return _request_page(request, enrollment, user=user, device_form=form, status=400)


def _request_page(
    request: HttpRequest,
    enrollment: EnrollmentRequest,
    *,
    user: Account,
    device_form: DeviceNameForm | None = None,
    status: int = 200,
) -> HttpResponse:
    is_owner = enrollment.owner_id == user.pk
    if device_form is None and is_owner:
        device_form = DeviceNameForm(initial={"device_name": enrollment.device_name})
    return render(
        request,
        "enroll/request_detail.html",
        {
            "nav": "dashboard",
            "enrollment": enrollment,
            "badge": REQUEST_BADGES[enrollment.status],
            "is_owner": is_owner,
            "device_form": device_form,
            "device_action": reverse("portal:request-device", args=[enrollment.pk]),
            "organization": settings.ENROLL_ORGANIZATION,
            "auto_approved": enrollment.decided_by_id is None and enrollment.renewal_of_id is not None,
        },
        status=status,
    )


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which browsers and bookmarks ask for whatever the page links: the portal's icon."""
    return redirect(static("favicon.svg"), permanent=True)


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
    commands = key_commands(user.get_username() if user.is_authenticated else "me")
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
