"""The SPKAC page: a fresh challenge, the ``openssl spkac`` command, paste (or a legacy ``<keygen>`` posts).

Each showing of the page hands out a new challenge bound to the user's web session
(:mod:`enroll.challenges`); the form carries it in a ``<keygen name="spkac" challenge="…">`` element, so a
legacy browser that still renders the element posts its SPKAC in the field ``spkac``. Modern browsers
ignore the element, and people paste the line ``openssl spkac`` printed into ``spkac_text``.
Refusals (of the SPKAC, of its challenge, of the portal's rules) come back inline, in plain words.
"""

from __future__ import annotations

from typing import Any

from crispy_forms.helper import FormHelper
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from ca.pki.errors import Refusal, RequestRefused
from ca.pki.spkac import MAX_SPKAC_BYTES
from ca.types import Account
from enroll import challenges, flows

#: The field a legacy ``<keygen name="spkac">`` element posts.
KEYGEN_FIELD = "spkac"

#: Refusals after which the pasted text is not shown again (a private key, or a wall of text).
_NOT_ECHOED = (Refusal.PRIVATE_KEY, Refusal.TOO_LARGE)


class SpkacForm(forms.Form):
    spkac_text = forms.CharField(
        label="Paste the SPKAC",
        required=False,
        strip=True,
        widget=forms.Textarea(
            attrs={
                "rows": 8,
                "class": "font-monospace",
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": "SPKAC=MIICQzCCASswggEiMA0G...",
            }
        ),
        help_text="The whole line openssl spkac printed, with or without SPKAC= in front "
        f"(at most {MAX_SPKAC_BYTES // 1024} KiB).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False  # the template writes the <form> around the <keygen> element
        self.helper.disable_csrf = True  # ... and its CSRF token

    def submission(self, post: QueryDict) -> str:
        """The pasted SPKAC, else what a legacy ``<keygen>`` posted."""
        text: str = self.cleaned_data.get("spkac_text") or ""
        return text or str(post.get(KEYGEN_FIELD, "")).strip()

    def refuse(self, message: str, *, code: Refusal | None = None) -> None:
        self.add_error("spkac_text", message)
        if code in _NOT_ECHOED or "PRIVATE KEY" in str(self.data.get("spkac_text", "")).upper():
            scrubbed = self.data.copy() if isinstance(self.data, QueryDict) else dict(self.data)
            scrubbed["spkac_text"] = ""
            self.data = scrubbed


def _user(request: HttpRequest) -> Account:
    user = request.user
    assert user.is_authenticated  # login_required
    return user


@require_http_methods(["GET", "POST"])
@login_required
def request_spkac(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    blocker = flows.submission_blocker(user)
    binding = challenges.session_binding(request.session)
    form = SpkacForm()
    if request.method == "POST" and blocker is None:
        form = SpkacForm(request.POST)
        if form.is_valid():
            data = form.submission(request.POST)
            if not data:
                form.refuse("Nothing was submitted. Paste the SPKAC that openssl spkac printed.")
            else:
                try:
                    submitted = flows.submit_spkac(
                        owner=user, data=data, session_binding=binding, require_verified_email=True
                    )
                except RequestRefused as refused:
                    form.refuse(refused.message, code=refused.code)
                except (challenges.ChallengeRefused, flows.SubmissionRefused) as refused:
                    form.refuse(str(refused))
                else:
                    messages.success(
                        request,
                        f"Request #{submitted.pk} (SPKAC, {submitted.key_description}) was submitted. An "
                        "administrator will look at it; you will get an e-mail when it is decided.",
                    )
                    return redirect("portal:request-detail", pk=submitted.pk)
    challenge = None if blocker is not None else challenges.issue(owner=user, binding=binding)
    return render(
        request,
        "portal/request_spkac.html",
        {
            "nav": "new",
            "form": form,
            "blocker": blocker,
            "challenge": challenge,
            "lifetime_minutes": challenges.CHALLENGE_LIFETIME.seconds // 60,
        },
    )
