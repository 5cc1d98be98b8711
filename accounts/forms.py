"""Forms for sign-up, the profile page and password reset. Errors are shown inline, next to their field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordResetForm as DjangoPasswordResetForm
from django.contrib.auth.forms import UserCreationForm, UsernameField

from accounts import services
from ca.types import Account

EMAIL_TAKEN = "An account with this e-mail address already exists. Log in, or reset your password."


class SignUpForm(UserCreationForm[Account]):
    """Username, e-mail address and password (checked by Django's password validators)."""

    email = forms.EmailField(
        label="E-mail address",
        max_length=254,
        help_text="We send a link to this address; you can request certificates once you open it.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    class Meta:
        model = get_user_model()
        fields = ("username", "email")
        field_classes = {"username": UsernameField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        username = self.fields["username"]
        username.help_text = (
            "Up to 150 characters: letters, digits and @ . + - _ only. It appears in your certificates."
        )
        self.fields["username"].widget.attrs.update({"autocomplete": "username", "autofocus": True})

    def clean_email(self) -> str:
        email: str = get_user_model()._default_manager.normalize_email(self.cleaned_data["email"].strip())
        if services.email_in_use(email):
            raise forms.ValidationError(EMAIL_TAKEN, code="email_taken")
        return email


class EmailChangeForm(forms.Form):
    """A new address for the account; the current password guards against a borrowed, logged-in browser."""

    email = forms.EmailField(
        label="New e-mail address",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    password = forms.CharField(
        label="Your current password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, user: Account, *args: Any, **kwargs: Any) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_email(self) -> str:
        email: str = get_user_model()._default_manager.normalize_email(self.cleaned_data["email"].strip())
        if email.lower() == (self.user.email or "").lower():
            raise forms.ValidationError("That is already your e-mail address.", code="same_email")
        if services.email_in_use(email, exclude=self.user):
            raise forms.ValidationError(
                "Another account already uses this e-mail address.", code="email_taken"
            )
        return email

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your current password.", code="password_incorrect")
        return password


class PasswordResetForm(DjangoPasswordResetForm):
    """Django's password reset form, whose :meth:`save` only queues the work.

    The request never looks for the account: :func:`accounts.services.queue_password_reset` enqueues a
    task with the address, and the task finds the account and mails the link
    (``accounts/email/password_reset``). So the answer, its work and its time are the same whether or
    not an account has the address (docs/MAIL.md).
    """

    def save(self, *args: Any, **kwargs: Any) -> None:
        services.queue_password_reset(self.cleaned_data["email"])
