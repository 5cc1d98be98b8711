"""Forms of the end-user pages: submit (or renew with) a CSR, submit an SPKAC, revoke one's own certificate,
name the device of a request or certificate.

The forms check only the shape of the input (one of paste or upload, the size before reading); the request
itself is checked by the flow, whose refusals the view puts back on the form with ``refuse`` /
``refuse_request`` (:class:`PastedRequestForm`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms
from django.core.files.uploadedfile import UploadedFile
from django.http import QueryDict
from django.utils.functional import Promise, lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ca.clock import utcnow
from ca.models import DEVICE_NAME_MAX_LENGTH, RevocationReason, clean_device_name
from ca.pki.csr import MAX_SUBMISSION_BYTES
from ca.pki.errors import Refusal, RequestRefused
from ca.pki.spkac import MAX_SPKAC_BYTES
from enroll import refusals
from enroll.flows import SELF_REVOCATION_REASONS

#: Refusals after which the pasted text is not shown again (a private key, or a wall of text).
_NOT_ECHOED = (Refusal.PRIVATE_KEY, Refusal.TOO_LARGE)

#: The field a legacy ``<keygen name="spkac">`` element posts.
KEYGEN_FIELD = "spkac"


def _fill(text: Promise | str, values: dict[str, object]) -> str:
    return str(text) % values


#: A translatable sentence with its named placeholders filled in when it is shown (in the language of
#: the request), not when the module is imported.
lazy_fill = lazy(_fill, str)


class DeviceNameField(forms.CharField):
    """The optional device name, checked by the one rule (:func:`ca.models.clean_device_name`): its
    refusal, in words, comes back on the field."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("label", _("Device name (optional)"))
        kwargs.setdefault(
            "help_text",
            lazy_fill(
                _(
                    'Which device the certificate is for, e.g. "Work laptop" (at most %(limit)s characters). '
                    "Only you and the administrators see it; it is not written into the certificate."
                ),
                {"limit": DEVICE_NAME_MAX_LENGTH},
            ),
        )
        kwargs.setdefault("widget", forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}))
        super().__init__(required=False, max_length=DEVICE_NAME_MAX_LENGTH, strip=True, **kwargs)

    def clean(self, value: Any) -> str:
        # the rule's own words instead of Django's generic length and null-character messages
        text = self.to_python(value)
        self.validate(text)
        return clean_device_name(text)


class DeviceNameForm(forms.Form):
    """Change the device name of one's own request or certificate (empty removes it)."""

    device_name = DeviceNameField(label=_("Device name"))


class PastedRequestForm(forms.Form):
    """A form with a text area for a pasted request (``text_field``), whose refusals come back inline.

    A private key (or anything that looks like one) pasted into it is never shown again.
    """

    text_field: str

    def full_clean(self) -> None:
        super().full_clean()
        if self.errors:
            self._scrub()

    def _scrub(self, *, always: bool = False) -> None:
        """Empty the text area when it holds a private key (or always, after some refusals)."""
        text = str(self.data.get(self.text_field, ""))
        if text and (always or "PRIVATE KEY" in text.upper()):
            scrubbed = self.data.copy() if isinstance(self.data, QueryDict) else dict(self.data)
            scrubbed[self.text_field] = ""
            self.data = scrubbed

    def refused_field(self) -> str:
        """The field a refusal of the submitted request is shown on."""
        return self.text_field

    def refuse(self, message: str, *, code: Refusal | None = None) -> None:
        """Show a refusal of the submitted request inline, on the field it came from."""
        self.add_error(self.refused_field(), message)
        self._scrub(always=code in _NOT_ECHOED)

    def refuse_request(self, refused: RequestRefused) -> None:
        """Show the PKI core's refusal in the person's language (enroll.refusals)."""
        self.refuse(refusals.describe(refused), code=refused.code)

    def given_device_name(self) -> str | None:
        """The device name given (cleaned; "" for none), or None if the form did not carry the field at all
        (a renewal then keeps the renewed certificate's)."""
        if "device_name" not in self.data:
            return None
        name: str = self.cleaned_data.get("device_name", "")
        return name


class CsrForm(PastedRequestForm):
    text_field = "csr_text"

    csr_text = forms.CharField(
        label=_("Paste your certificate request (CSR)"),
        required=False,
        strip=True,
        widget=forms.Textarea(
            attrs={
                "rows": 10,
                "class": "font-monospace",
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": "-----BEGIN CERTIFICATE REQUEST-----\n...\n-----END CERTIFICATE REQUEST-----",
            }
        ),
        help_text=_("The whole file, from the -----BEGIN line to the -----END line."),
    )
    csr_file = forms.FileField(
        label=_("… or upload the CSR file"),
        required=False,
        help_text=lazy_fill(
            _("PEM or DER (.csr, .pem, .der, .req), at most %(limit_kib)s KiB."),
            {"limit_kib": MAX_SUBMISSION_BYTES // 1024},
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csr,.pem,.der,.req,.txt"}),
    )
    device_name = DeviceNameField()

    def __init__(self, *args: Any, submit_label: str | Promise = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_method = "post"
        self.helper.form_tag = True
        self.helper.attrs = {"novalidate": ""}  # errors come back inline from the server, in plain words
        self.helper.add_input(Submit("submit", submit_label or gettext("Submit request")))

    def clean_csr_file(self) -> UploadedFile | None:
        upload: UploadedFile | None = self.cleaned_data.get("csr_file")
        if upload is not None and (upload.size or 0) > MAX_SUBMISSION_BYTES:
            raise forms.ValidationError(
                gettext(
                    "The file is %(size)s bytes; a certificate request is at most %(limit_kib)s KiB. Upload "
                    "only the CSR file."
                )
                % {"size": upload.size, "limit_kib": MAX_SUBMISSION_BYTES // 1024},
                code="too_large",
            )
        return upload

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        text, upload = cleaned.get("csr_text"), cleaned.get("csr_file")
        if self.errors:
            return cleaned
        if text and upload is not None:
            raise forms.ValidationError(
                gettext("Paste the request or upload the file, not both."), code="both"
            )
        if not text and upload is None:
            raise forms.ValidationError(
                gettext("Nothing was submitted. Paste your CSR or choose the CSR file."), code="empty"
            )
        return cleaned

    def submission(self) -> bytes | str:
        """The submitted request: the pasted text, or the uploaded bytes (read only after the size check)."""
        upload: UploadedFile | None = self.cleaned_data.get("csr_file")
        if upload is not None:
            upload.seek(0)
            data: bytes = upload.read(MAX_SUBMISSION_BYTES + 1)
            return data
        text: str = self.cleaned_data.get("csr_text") or ""
        return text

    def refused_field(self) -> str:
        return "csr_file" if self.cleaned_data.get("csr_file") is not None else self.text_field


class SpkacForm(PastedRequestForm):
    """The SPKAC page's form: a pasted ``openssl spkac`` line, else what a legacy ``<keygen>`` posted.

    The template writes the ``<form>`` (and its CSRF token) around the ``<keygen>`` element.
    """

    text_field = "spkac_text"

    spkac_text = forms.CharField(
        label=_("Paste the SPKAC"),
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
        help_text=lazy_fill(
            _(
                "The whole line openssl spkac printed, with or without SPKAC= in front (at most "
                "%(limit_kib)s KiB)."
            ),
            {"limit_kib": MAX_SPKAC_BYTES // 1024},
        ),
    )
    device_name = DeviceNameField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.disable_csrf = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors and not self.submission():
            self.add_error(
                "spkac_text", gettext("Nothing was submitted. Paste the SPKAC that openssl spkac printed.")
            )
        return cleaned

    def submission(self) -> str:
        """The pasted SPKAC, else what a legacy ``<keygen>`` posted."""
        text: str = self.cleaned_data.get("spkac_text") or ""
        return text or str(self.data.get(KEYGEN_FIELD, "")).strip()


class DangerSubmit(Submit):  # type: ignore[misc]  # crispy-forms ships no type hints
    field_classes = "btn btn-danger"


_REASON_LABELS = {
    RevocationReason.KEY_COMPROMISE: _("Key compromise: the private key was lost, stolen or seen by others"),
    RevocationReason.SUPERSEDED: _("Superseded: I have a new certificate that replaces this one"),
    RevocationReason.CESSATION_OF_OPERATION: _("No longer needed: I stopped using it"),
}


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(
        label=_("Why should this certificate stop working?"),
        choices=[(reason.value, _REASON_LABELS[reason]) for reason in SELF_REVOCATION_REASONS],
        widget=forms.RadioSelect,
    )
    invalidity_date = forms.DateField(
        label=_("Since when may the key have been compromised? (optional)"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Only for key compromise: the first day someone else may have had the key (UTC)."),
    )
    confirm = forms.BooleanField(
        label=_("I understand that this cannot be undone: the certificate stops working everywhere."),
        required=True,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_method = "post"
        self.helper.add_input(DangerSubmit("submit", gettext("Revoke the certificate")))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        day: dt.date | None = cleaned.get("invalidity_date")
        if day is None:
            return cleaned
        if cleaned.get("reason") != RevocationReason.KEY_COMPROMISE:
            self.add_error(
                "invalidity_date", gettext("A date of compromise only goes with the reason key compromise.")
            )
        elif day > utcnow().date():
            self.add_error("invalidity_date", gettext("The date of compromise cannot be in the future."))
        return cleaned

    def reason_value(self) -> RevocationReason:
        return RevocationReason(self.cleaned_data["reason"])

    def invalidity_datetime(self) -> dt.datetime | None:
        day: dt.date | None = self.cleaned_data.get("invalidity_date")
        if day is None:
            return None
        return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
