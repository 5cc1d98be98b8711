"""Account pages: sign-up, e-mail verification, login/logout, password reset and change, profile.

Thin views: the logic lives in :mod:`accounts.services`. Every change of state is a POST with CSRF.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from axes.utils import reset as reset_lockout
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils import translation
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views import i18n
from django.views.decorators.http import require_http_methods, require_POST

from accounts import auditing, ratelimits, services
from accounts.certlogin import certificate_session
from accounts.forms import (
    ApproverMailForm,
    EmailChangeForm,
    PasswordChangeForm,
    PasswordResetForm,
    SignUpForm,
    choice_words,
)
from accounts.models import Profile, can_approve
from accounts.ratelimits import check_mailbox, mailbox_limit_words, rate_limited, refused
from accounts.services import TokenState
from ca.models import AuditEvent
from ca.types import Account

#: The backend that checked the password at sign-up (other backends, e.g. certificate login, may follow).
SIGN_UP_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _account(request: HttpRequest) -> Account:
    """The logged-in account (only for views behind ``login_required``)."""
    user = request.user
    assert isinstance(user, Account), "login_required guards this view"
    return user


# --- sign-up and verification ----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@rate_limited("signup")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # The link must be able to go: a mailbox that had its share of our mails today gets no account.
        refusal = check_mailbox(request, form.cleaned_data["email"])
        if refusal is not None:
            return refused(request, refusal)
        try:
            user = services.sign_up(
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                language=translation.get_language() or "",
            )
        except services.UsernameTaken as taken:
            form.add_error("username", str(taken))
            return render(request, "accounts/signup.html", {"form": form})
        login(request, user, backend=SIGN_UP_BACKEND)
        services.send_verification_email(user)
        messages.success(
            request,
            _(
                "Welcome, %(username)s! We sent a link to %(email)s. "
                "Open it to confirm your address; then you can request certificates."
            )
            % {"username": user.get_username(), "email": user.email},
        )
        return redirect("accounts:profile")
    return render(request, "accounts/signup.html", {"form": form})


@require_http_methods(["GET", "POST"])
def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows what the link is for and a confirm button; POST verifies (mail scanners only GET)."""
    if request.method == "POST":
        check = services.verify_email(token)
        if check.state is TokenState.VALID and check.user is not None:
            messages.success(
                request,
                _("Thank you: %(email)s is verified. You can now request certificates.")
                % {"email": check.user.email},
            )
            if request.user.is_authenticated:
                return redirect(settings.LOGIN_REDIRECT_URL)
            return redirect("accounts:login")
    else:
        check = services.check_verification_token(token)
    if check.state is TokenState.VALID:
        template = "accounts/verify_confirm.html"
    else:
        template = "accounts/verify_problem.html"
    context = {
        "check": check,
        "state": check.state.value,
        "token": token,
        "account": check.user,
        "hours": settings.ENROLL_EMAIL_VERIFICATION_HOURS,
        "is_own_account": check.user is not None and request.user.pk == check.user.pk,
    }
    status = 400 if check.state is TokenState.INVALID else 200
    return render(request, template, context, status=status)


@require_POST
def resend_verification(request: HttpRequest) -> HttpResponse:
    """Send a new link: to the logged-in account, or to the account an (expired) link was made for."""
    if request.user.is_authenticated:
        user = _account(request)
        if services.verified_email(user) is not None:
            messages.info(
                request, _("Your e-mail address %(email)s is already verified.") % {"email": user.email}
            )
            return redirect("accounts:profile")
        refusal = ratelimits.check(request, "verify_mail") or check_mailbox(request, user.email)
        if refusal is not None:
            return refused(request, refusal)
        services.send_verification_email(user)
        messages.success(
            request,
            _("We sent a new link to %(email)s. It may take a minute; check your spam folder too.")
            % {"email": user.email},
        )
        return redirect("accounts:profile")

    token_check = services.check_verification_token(request.POST.get("token", ""))
    if token_check.state is TokenState.ALREADY_VERIFIED:
        messages.info(request, _("That e-mail address is already verified. Log in to continue."))
    elif token_check.state is not TokenState.INVALID and token_check.user is not None:
        account = token_check.user
        refusal = ratelimits.check(request, "verify_mail", account=f"user:{account.pk}") or check_mailbox(
            request, account.email
        )
        if refusal is not None:
            return refused(request, refusal)
        services.send_verification_email(account)
        messages.success(
            request,
            _(
                "We sent a new link to the account's e-mail address. "
                "It may take a minute; check your spam folder too."
            ),
        )
    else:
        messages.info(
            request,
            _("Log in, then press “Send a new link” on your profile page to get a fresh verification link."),
        )
    return redirect("accounts:login")


# --- profile ---------------------------------------------------------------------------------------


#: The hidden field that says a POST to the profile page is the approvers' mail choice.
APPROVER_MAIL_FORM = "approver-mail"


def _approver_mail_form(request: HttpRequest, user: Account, *, posted: bool) -> ApproverMailForm | None:
    """The approvers' mail choice (bound when ``posted``), or None for an account that cannot approve."""
    if not can_approve(user):
        return None
    profile = Profile.objects.filter(user=user).first() or Profile(user=user)
    return ApproverMailForm(request.POST if posted else None, instance=profile)


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    user = _account(request)
    mail_choice_posted = request.method == "POST" and request.POST.get("form") == APPROVER_MAIL_FORM
    mail_form = _approver_mail_form(request, user, posted=mail_choice_posted)
    if mail_choice_posted:
        if mail_form is None:
            raise PermissionDenied("Only approvers choose how they hear of new requests.")
        if mail_form.is_valid():
            mail_form.save()
            messages.success(
                request,
                _("Saved. E-mail about new requests: %(choice)s.")
                % {"choice": choice_words(mail_form.effective())},
            )
            return redirect("accounts:profile")
    form = EmailChangeForm(user, None if mail_choice_posted else request.POST or None, request=request)
    if form.is_bound and form.is_valid():
        refusal = ratelimits.check(request, "email_change") or check_mailbox(
            request, form.cleaned_data["email"]
        )
        if refusal is not None:
            return refused(request, refusal)
        # The notice goes to the old address only if it was verified: a proven owner to warn, and not a
        # way to mail an address someone typed in without owning it.
        old_verified = services.verified_email(user)
        services.change_email(user, form.cleaned_data["email"], request=request)
        if old_verified is not None:
            services.send_email_changed_notice(user, old_email=old_verified)
        services.send_verification_email(user)
        messages.success(
            request,
            _(
                "Your e-mail address is now %(email)s. We sent a link there: open it to verify the new "
                "address. Until then you cannot request certificates."
            )
            % {"email": user.email},
        )
        return redirect("accounts:profile")
    verified_at = services.email_verified_at(user)
    context: dict[str, Any] = {
        "nav": "profile",
        "form": form,
        "verified": verified_at is not None,
        "verified_at": verified_at,
        "hours": settings.ENROLL_EMAIL_VERIFICATION_HOURS,
        # Set when this session was made by certificate login: which certificate, and no sign-out.
        "certificate_login": certificate_session(request),
        # For approvers only: how they hear of new requests (enroll.approver_mail).
        "approver_mail_form": mail_form,
        "approver_mail_form_name": APPROVER_MAIL_FORM,
    }
    return render(request, "accounts/profile.html", context)


# --- the language switcher -------------------------------------------------------------------------


def set_language_cookie(response: HttpResponse, language: str) -> None:
    """The cookie LocaleMiddleware reads, as Django's ``set_language`` sets it (LANGUAGE_COOKIE_*)."""
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        language,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=cast("Literal['Lax', 'Strict', 'None'] | None", settings.LANGUAGE_COOKIE_SAMESITE),
    )


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The switcher (templates/_language_switcher.html, a POST with CSRF): Django's ``set_language`` sets
    the language cookie and goes back to ``next``; for a signed-in person the choice is also kept on their
    profile, so their mails and their pages on other devices follow it."""
    response = i18n.set_language(request)
    language = request.POST.get("language", "")
    if request.user.is_authenticated and response.cookies.get(settings.LANGUAGE_COOKIE_NAME) is not None:
        services.remember_language(_account(request), language)
    return response


# --- Django's auth views with our templates --------------------------------------------------------


@method_decorator(rate_limited("login"), name="dispatch")
class LoginView(auth_views.LoginView):
    """Django's login, rate-limited; django-axes (the first authentication backend) locks out guessing."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        """Log in; the pages follow the language the person chose (their profile), on this device too."""
        response = super().form_valid(form)
        language = services.chosen_language(form.get_user())
        if language:
            set_language_cookie(response, language)
        return response


@method_decorator(rate_limited("password_reset"), name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    """The same answer, after the same work, whether or not an account has the address (docs/MAIL.md).

    Limited per client address (429, whatever the address typed); per mailbox silently: over that limit
    no task is queued, and the answer is the same page, which says the limits.
    """

    template_name = "accounts/password_reset_form.html"
    form_class = PasswordResetForm  # save() queues accounts.services.mail_password_reset
    success_url = reverse_lazy("accounts:password-reset-done")

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        if check_mailbox(self.request, form.cleaned_data["email"]) is None:
            form.save()
        return HttpResponseRedirect(self.get_success_url())


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "mail_limits": mailbox_limit_words()}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password-reset-complete")

    def form_valid(self, form: SetPasswordForm[Any]) -> HttpResponse:
        """A new password set through the e-mailed link lifts the account's login lock-out.

        Only the username's failures go: an address locked out for guessing stays locked, or anyone
        could reset their own password to go on guessing other accounts' passwords from it.
        """
        response = super().form_valid(form)
        auditing.record_account_event(AuditEvent.PASSWORD_RESET, form.user, self.request)
        reset_lockout(username=form.user.get_username())
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change; a wrong old password counts toward the lock-out (accounts.passwords)."""

    template_name = "accounts/password_change_form.html"
    form_class = PasswordChangeForm
    success_url = reverse_lazy("accounts:password-change-done")
    extra_context = {"nav": "profile"}

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_valid(form)
        auditing.record_account_event(AuditEvent.PASSWORD_CHANGED, _account(self.request), self.request)
        return response


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "accounts/password_change_done.html"
    extra_context = {"nav": "profile"}
