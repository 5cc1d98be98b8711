"""*Enroll a device*: an owner makes enrollment codes for their own devices (EST, SCEP) and revokes them.

Thin over :mod:`enroll.flows.devices`. The code is shown once, on the answer to the POST that made it (never
stored, never in a redirect or a message); the page lists the owner's codes with their uses, expiry and
state. An owner's code is never pre-approved: a device's request made with it waits for an approver, as a
request made on the portal does.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods, require_POST

from accounts.ratelimits import rate_limited
from ca.clock import utcnow
from enroll import flows
from enroll.device_info import DeviceInstructions, expiry_words, instructions
from enroll.forms import DeviceNameField
from enroll.models import CodeState, EnrollmentCode
from enroll.pages import portal_user

#: How many of the owner's codes the page lists (newest first).
LISTED_CODES = 50

STATE_BADGES = {
    CodeState.ACTIVE: "text-bg-success",
    CodeState.USED_UP: "text-bg-secondary",
    CodeState.EXPIRED: "text-bg-secondary",
    CodeState.REVOKED: "text-bg-danger",
}


class EnrollmentCodeForm(forms.Form):
    device_name = DeviceNameField(
        label=_("Device name"),
        help_text=_(
            "A label for the device, such as office-printer: it names the certificate on your pages."
        ),
    )


@require_http_methods(["GET", "POST"])
@login_required
@rate_limited("submit")
def devices(request: HttpRequest) -> HttpResponse:
    user = portal_user(request)
    blocker = flows.submission_blocker(user)
    form = EnrollmentCodeForm()
    created: tuple[EnrollmentCode, str, DeviceInstructions] | None = None
    if request.method == "POST" and blocker is None:
        form = EnrollmentCodeForm(request.POST)
        if form.is_valid():
            try:
                row, code = flows.create_enrollment_code(
                    owner=user, created_by=user, device_name=form.cleaned_data["device_name"]
                )
            except flows.FlowError as exc:
                form.add_error("device_name", str(exc))
            else:
                info = instructions(code=code, device_name=row.device_name, username=user.get_username())
                created = (row, code, info)
                form = EnrollmentCodeForm()
    now = utcnow()
    codes = [
        {
            "row": row,
            "state": row.state(now),
            "badge": STATE_BADGES[row.state(now)],
            "expiry": expiry_words(row, now=now),
        }
        for row in EnrollmentCode.objects.filter(owner=user).select_related("created_by")[:LISTED_CODES]
    ]
    response = render(
        request,
        "enroll/devices.html",
        {"nav": "devices", "form": form, "blocker": blocker, "created": created, "codes": codes},
    )
    if created is not None:
        response["Cache-Control"] = "no-store"  # the page holds the code: never kept in a cache
    return response


@require_POST
@login_required
def revoke_code(request: HttpRequest, pk: int) -> HttpResponse:
    user = portal_user(request)
    row = get_object_or_404(EnrollmentCode, pk=pk, owner=user)
    flows.revoke_enrollment_code(code_id=row.pk, actor=user)
    if row.device_name:
        said = gettext("The enrollment code for %(device)s is revoked: no device can use it any more.") % {
            "device": row.device_name
        }
    else:
        said = gettext("The enrollment code is revoked: no device can use it any more.")
    messages.success(request, said)
    return redirect("portal:devices")
