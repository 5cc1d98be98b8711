"""Forms for sign-up, the profile page and password reset. Errors are shown inline, next to their field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordChangeForm as DjangoPasswordChangeForm
from django.contrib.auth.forms import PasswordResetForm as DjangoPasswordResetForm
from django.contrib.auth.forms import UserCreationForm, UsernameField
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy

from accounts import addresses, services, usernames
from accounts.models import ApproverMail, Profile
from accounts.passwords import PasswordCheck, check_current_password
from ca.types import Account

WRONG_PASSWORD = gettext_lazy("That is not your current password.")
EMAIL_TAKEN = gettext_lazy(
    "An account with this e-mail address already exists. Log in, or reset your password."
)


def certificate_address(address: str) -> str:
    """The address as certificates will carry it (accounts.addresses), or the plain-words reason not."""
    try:
        return addresses.certificate_form(address)
    except addresses.AddressProblem as refusal:
        raise forms.ValidationError(str(refusal), code="invalid_email") from None


def checked_username(value: object, *, exclude_pk: int | str | None = None) -> str:
    """A username that can be a certificate's name and looks like no other account's (accounts.usernames)."""
    name = usernames.normalise(str(value))
    problem = usernames.problem(name)
    if problem is not None:
        raise forms.ValidationError(problem, code="invalid_username")
    if usernames.clashing_account(name, exclude_pk=exclude_pk) is not None:
        raise forms.ValidationError(usernames.LOOK_ALIKE, code="username_taken")
    return name


class SignUpForm(UserCreationForm[Account]):
    """Username, e-mail address and password (checked by Django's password validators)."""

    email = forms.EmailField(
        label=gettext_lazy("E-mail address"),
        max_length=254,
        help_text=gettext_lazy(
            "We send a link to this address; you can request certificates once you open it."
        ),
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    class Meta:
        model = get_user_model()
        fields = ("username", "email")
        field_classes = {"username": UsernameField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        username = self.fields["username"]
        username.help_text = usernames.rule_words()
        username.widget.attrs.update(
            {"autocomplete": "username", "autofocus": True, "maxlength": str(usernames.MAX_LENGTH)}
        )

    def clean_username(self) -> str:
        return checked_username(self.cleaned_data["username"])

    def clean_email(self) -> str:
        email = certificate_address(self.cleaned_data["email"])
        if services.email_in_use(email):
            raise forms.ValidationError(EMAIL_TAKEN, code="email_taken")
        return email


class EmailChangeForm(forms.Form):
    """A new address for the account; the current password guards against a borrowed, logged-in browser.

    The password is checked first (:func:`accounts.passwords.check_current_password`, counted toward the
    lock-out): only after the right one does the form say anything about the new address beyond its
    form, so the page cannot be asked which addresses other accounts use.
    """

    email = forms.EmailField(
        label=gettext_lazy("New e-mail address"),
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    password = forms.CharField(
        label=gettext_lazy("Your current password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, user: Account, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        self.user = user
        self.request = request
        super().__init__(*args, **kwargs)

    def clean_email(self) -> str:
        return certificate_address(self.cleaned_data["email"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "password" not in cleaned:
            return cleaned
        if (
            check_current_password(self.request, self.user, cleaned.pop("password"))
            is not PasswordCheck.RIGHT
        ):
            self.add_error("password", forms.ValidationError(WRONG_PASSWORD, code="password_incorrect"))
            return cleaned
        email = cleaned.get("email")
        if email is None:
            return cleaned
        if email.lower() == (self.user.email or "").lower():
            self.add_error(
                "email", forms.ValidationError(_("That is already your e-mail address."), code="same_email")
            )
        elif services.email_in_use(email, exclude=self.user):
            self.add_error(
                "email",
                forms.ValidationError(
                    _("Another account already uses this e-mail address."), code="email_taken"
                ),
            )
        return cleaned


class PasswordChangeForm(DjangoPasswordChangeForm):
    """Django's password change, whose old password counts toward the lock-out like a failed login."""

    def __init__(self, user: Account, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        old_password: str = self.cleaned_data["old_password"]
        if check_current_password(self.request, self.user, old_password) is not PasswordCheck.RIGHT:
            raise forms.ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password


class PasswordResetForm(DjangoPasswordResetForm):
    """Django's password reset form, whose :meth:`save` only queues the work.

    The request never looks for the account: :func:`accounts.services.queue_password_reset` enqueues a
    task with the address, and the task finds the account and mails the link
    (``accounts/email/password_reset``). So the answer, its work and its time are the same whether or
    not an account has the address (docs/MAIL.md).
    """

    def save(self, *args: Any, **kwargs: Any) -> None:
        services.queue_password_reset(self.cleaned_data["email"])


#: What ``settings.ENROLL_APPROVER_MAIL`` (each, digest, off) gives an approver who did not choose.
SITE_APPROVER_MAIL = {"each": ApproverMail.EACH, "digest": ApproverMail.DIGEST, "off": ApproverMail.NONE}


#: Each effective choice as a sentence names it ("Saved. E-mail about new requests: one e-mail per request.").
_CHOICE_WORDS = {
    ApproverMail.EACH: pgettext_lazy("approver mail choice inside a sentence", "one e-mail per new request"),
    ApproverMail.DIGEST: pgettext_lazy(
        "approver mail choice inside a sentence", "one e-mail an hour listing the new requests"
    ),
    ApproverMail.NONE: pgettext_lazy("approver mail choice inside a sentence", "no e-mail about requests"),
}


def choice_words(choice: ApproverMail) -> str:
    """``choice`` as a sentence names it, in the active language."""
    words = _CHOICE_WORDS.get(choice)
    return str(words) if words is not None else str(choice.label)


def site_approver_mail() -> ApproverMail:
    """The site's choice for approvers who made none (``settings.ENROLL_APPROVER_MAIL``)."""
    return SITE_APPROVER_MAIL.get(str(settings.ENROLL_APPROVER_MAIL), ApproverMail.EACH)


class ApproverMailForm(forms.ModelForm[Profile]):
    """For approvers, on the profile page: how they hear of new requests (enroll.approver_mail)."""

    class Meta:
        model = Profile
        fields = ("approver_mail",)
        labels = {"approver_mail": gettext_lazy("E-mail about new requests")}
        widgets = {"approver_mail": forms.RadioSelect}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["approver_mail"]
        assert isinstance(field, forms.ChoiceField)
        site = _("As the site sets it (now: %(choice)s)") % {"choice": choice_words(site_approver_mail())}
        field.choices = [
            (value, site if value == ApproverMail.SITE else label) for value, label in ApproverMail.choices
        ]
        field.help_text = _(
            "Reminders of requests that wait longer than the service level come with both kinds of "
            "e-mail. You are never told about your own requests."
        )

    def effective(self) -> ApproverMail:
        """The choice that applies after saving: the account's own, else the site's."""
        chosen = str(self.cleaned_data.get("approver_mail") or "")
        return ApproverMail(chosen) if chosen else site_approver_mail()
