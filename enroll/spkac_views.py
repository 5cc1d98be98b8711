"""The SPKAC page: a fresh challenge, the ``openssl spkac`` command, paste (or a legacy ``<keygen>`` posts).

Each showing of the page hands out a new challenge bound to the user's web session
(:mod:`enroll.challenges`); the form carries it in a ``<keygen name="spkac" challenge="…">`` element, so a
legacy browser that still renders the element posts its SPKAC in the field ``spkac``. Modern browsers
ignore the element, and people paste the line ``openssl spkac`` printed into ``spkac_text``.
Refusals (of the SPKAC, of its challenge, of the portal's rules) come back inline, in plain words, with how
many tries are left (a refused submission counts against the limit too).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from accounts import ratelimits
from accounts.ratelimits import rate_limited
from ca.pki.errors import RequestRefused
from enroll import challenges, flows
from enroll.forms import SpkacForm
from enroll.pages import key_name, portal_user


@sensitive_post_parameters("spkac_text")
@require_http_methods(["GET", "POST"])
@login_required
@rate_limited("submit", keep="spkac_text")
def request_spkac(request: HttpRequest) -> HttpResponse:
    user = portal_user(request)
    blocker = flows.submission_blocker(user)
    binding = challenges.session_binding(request.session)
    form = SpkacForm()
    tries_left = ""
    if request.method == "POST" and blocker is None:
        form = SpkacForm(request.POST)
        if form.is_valid():
            try:
                submitted = flows.submit_spkac(
                    owner=user,
                    data=form.submission(),
                    session_binding=binding,
                    require_verified_email=True,
                    device_name=form.given_device_name(),
                )
            except RequestRefused as refused:
                form.refuse_request(refused)
            except (challenges.ChallengeRefused, flows.SubmissionRefused) as refused:
                form.refuse(str(refused))
            else:
                messages.success(
                    request,
                    gettext(
                        "Request #%(number)s (SPKAC, %(key)s) was submitted. An administrator will look at "
                        "it; you will get an e-mail when it is decided."
                    )
                    % {"number": submitted.pk, "key": submitted.key_description},
                )
                return redirect("portal:request-detail", pk=submitted.pk)
        tries_left = ratelimits.allowance_message(request, "submit")
    challenge = None
    if blocker is None:
        refusal = ratelimits.check(request, "challenge")
        if refusal is not None:
            return ratelimits.refused(request, refusal)
        challenge = challenges.issue(owner=user, binding=binding)
    return render(
        request,
        "enroll/request_spkac.html",
        {
            "nav": "new",
            "form": form,
            "blocker": blocker,
            "challenge": challenge,
            "tries_left": tries_left,
            "key_name": key_name(user.get_username()),
            "lifetime_minutes": challenges.CHALLENGE_LIFETIME_MINUTES,
        },
    )
