"""Key generation in the browser: the page that makes a key pair and a PKCS#10 with WebCrypto, and the
endpoint that takes the CSR (only the CSR: the private key never leaves the browser).

The page's script (``static/portal/keygen.js``) generates the key, makes the user save it as an encrypted
PKCS#8 file, keeps it in IndexedDB, then POSTs the PEM CSR here (``fetch`` with the CSRF token). The
answer is JSON: ``{"ok": true, "request_id": N, "url": "/requests/N/"}`` or ``{"ok": false, "error": "...",
"tries_left": "...", "code": "..."}`` with status 400 (403 while the e-mail address is unverified); the error
ends with how many tries are left (a refusal counts against the limit too), ``code`` is the core's refusal.
The checks are the ones of a pasted CSR:
:func:`enroll.flows.submit_csr` with ``require_verified_email=True``; the optional ``device_name`` field
follows the device-name rule (:func:`ca.models.clean_device_name`), its refusal in ``error``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST, require_safe

from accounts.ratelimits import allowance_message, rate_limited
from ca.models import DEVICE_NAME_MAX_LENGTH, clean_device_name
from ca.pki.errors import RequestRefused
from enroll import flows, refusals
from enroll.pages import key_name, portal_user

logger = logging.getLogger(__name__)

#: Key choices offered on the page: (value, label). The first one is the default.
KEY_CHOICES: tuple[tuple[str, str | Promise], ...] = (
    ("ec-p256", _("ECDSA P-256 (recommended: small, fast, accepted everywhere current)")),
    ("rsa-2048", _("RSA 2048 (for old servers and devices that lack ECDSA)")),
    ("rsa-3072", "RSA 3072"),
)


@require_safe
@login_required
def keygen(request: HttpRequest) -> HttpResponse:
    """The page that generates a key pair and a CSR in the browser."""
    user = portal_user(request)
    username = user.get_username()
    return render(
        request,
        "enroll/keygen.html",
        {
            "nav": "new",
            "blocker": flows.submission_blocker(user),
            "key_choices": KEY_CHOICES,
            "device_name_max_length": DEVICE_NAME_MAX_LENGTH,
            "keygen_config": {
                "submitUrl": reverse("portal:keygen-submit"),
                "commonName": username,
                "fileStem": key_name(username),
            },
        },
    )


def _refused(request: HttpRequest, error: str, *, status: int, code: str = "") -> JsonResponse:
    """A refusal as JSON: ``error`` followed by how many tries are left (the refusal counted too)."""
    tries_left = allowance_message(request, "submit")
    body: dict[str, str | bool] = {
        "ok": False,
        "error": f"{error} {tries_left}".strip(),
        "tries_left": tries_left,
    }
    if code:
        body["code"] = code
    return JsonResponse(body, status=status)


@require_POST
@login_required
@rate_limited("submit", as_json=True)
def keygen_submit(request: HttpRequest) -> JsonResponse:
    """Take the PEM CSR the page made and store it as a new request (JSON in, JSON out)."""
    user = portal_user(request)
    csr = request.POST.get("csr", "")
    if not csr.strip():
        return _refused(request, gettext("The page sent no certificate request."), status=400)
    try:
        device_name = clean_device_name(request.POST.get("device_name", ""))
    except ValidationError as refused:
        return _refused(request, " ".join(refused.messages), status=400)
    try:
        submitted = flows.submit_csr(
            owner=user, data=csr, require_verified_email=True, device_name=device_name
        )
    except RequestRefused as refused:
        return _refused(request, refusals.describe(refused), status=400, code=refused.code.value)
    except flows.SubmissionRefused as refused:
        return _refused(request, str(refused), status=403)
    logger.info("request #%s submitted from in-browser key generation", submitted.pk)
    messages.success(
        request,
        gettext(
            "Request #%(number)s (%(key)s) was submitted. Your key stays in this browser and in the file you "
            "saved. An administrator will look at the request; you will get an e-mail when it is decided."
        )
        % {"number": submitted.pk, "key": submitted.key_description},
    )
    return JsonResponse(
        {
            "ok": True,
            "request_id": submitted.pk,
            "key_description": submitted.key_description,
            "spki_sha256": submitted.spki_sha256,
            "url": reverse("portal:request-detail", args=[submitted.pk]),
        }
    )
