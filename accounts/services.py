"""Accounts logic: sign-up, e-mail verification tokens and mails, e-mail change.

Views stay thin and call these. A verification token is a signed (``django.core.signing``) object holding
the account id, a keyed hash of the e-mail address it was sent to, and the time it was made
(:func:`ca.clock.utcnow`). It is valid for ``settings.ENROLL_EMAIL_VERIFICATION_HOURS``, only for that
account and only while that address is still the account's address; once the address is verified, the link
just says so. Links in e-mails are absolute, built from ``settings.ENROLL_PUBLIC_URL``.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.tokens import default_token_generator
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import pgettext_lazy
from django_tasks import task

from accounts import auditing, emails, usernames
from accounts.models import Profile, known_language
from ca import audit
from ca.clock import utcnow
from ca.models import AuditEvent
from ca.types import Account

VERIFY_SALT = "accounts.verify-email"


def email_verified_at(user: Account) -> dt.datetime | None:
    """When the account's current e-mail address was verified; None if it is not (or changed since)."""
    profile = Profile.objects.filter(user=user).first()
    if profile is None or not profile.verifies(getattr(user, "email", "")):
        return None
    return profile.email_verified_at


def verified_email(user: Account) -> str | None:
    """The user's e-mail address if it is verified and still the account's address, else None."""
    email: str = getattr(user, "email", "")
    return email if email_verified_at(user) is not None else None


def mark_email_verified(user: Account, *, now: dt.datetime | None = None) -> None:
    Profile.objects.update_or_create(
        user=user,
        defaults={"email_verified_at": now or utcnow(), "verified_email": getattr(user, "email", "")},
    )


def mail_language(user: Account) -> str:
    """The language of ``user``'s mails (:meth:`Profile.mail_language`: theirs, else the site's)."""
    profile = Profile.objects.filter(user=user).first() or Profile(user=user)
    return profile.mail_language()


def chosen_language(user: Account) -> str:
    """The language ``user`` chose or signed up in (a code of ``settings.LANGUAGES``), or "" for none."""
    language = Profile.objects.filter(user=user).values_list("language", flat=True).first()
    return known_language(language or "")


def remember_language(user: Account, language: str) -> bool:
    """Keep ``language`` as ``user``'s (the switcher, used while signed in). False for an unknown code."""
    if not known_language(language):
        return False
    Profile.objects.update_or_create(user=user, defaults={"language": language})
    return True


def portal_url() -> str:
    """The base URL of the portal's pages in e-mails: ``ENROLL_PORTAL_URL`` if set, else the public URL,
    on https when ``ENROLL_HTTPS`` is on (the public URL may stay http for the CRL and OCSP URLs in
    certificates; a link carrying a token must not cross the network in the clear before the redirect)."""
    explicit = str(getattr(settings, "ENROLL_PORTAL_URL", "") or "")
    if explicit:
        return explicit
    public = str(settings.ENROLL_PUBLIC_URL)
    if getattr(settings, "ENROLL_HTTPS", False) and public.startswith("http://"):
        return "https://" + public.removeprefix("http://")
    return public


def absolute_url(path: str) -> str:
    """An absolute link for an e-mail: :func:`portal_url` and ``path`` (from ``reverse``)."""
    return portal_url() + path


def verification_lifetime() -> dt.timedelta:
    return dt.timedelta(hours=settings.ENROLL_EMAIL_VERIFICATION_HOURS)


# --- tokens ----------------------------------------------------------------------------------------


def _address_digest(email: str) -> str:
    """A keyed hash of the address: binds the token to it without putting the address in the URL."""
    return salted_hmac(VERIFY_SALT, email.strip().lower()).hexdigest()[:32]


def make_verification_token(user: Account, *, now: dt.datetime | None = None) -> str:
    """A signed token that verifies ``user``'s current e-mail address for a limited time."""
    issued = int((now or utcnow()).timestamp())
    payload = {"u": str(user.pk), "e": _address_digest(getattr(user, "email", "")), "t": issued}
    return signing.Signer(salt=VERIFY_SALT).sign_object(payload)


class TokenState(enum.Enum):
    VALID = "valid"
    #: Not made by us: tampered with, truncated, from another installation, or the account is gone.
    INVALID = "invalid"
    EXPIRED = "expired"
    #: Made for an address the account no longer has.
    OLD_ADDRESS = "old-address"
    ALREADY_VERIFIED = "already-verified"


@dataclass(frozen=True)
class TokenCheck:
    state: TokenState
    user: Account | None = None
    #: When the link stopped (or stops) working; None for an invalid token.
    expires_at: dt.datetime | None = None


def check_verification_token(token: str, *, now: dt.datetime | None = None) -> TokenCheck:
    """What a verification token is worth now. Never raises, whatever the input."""
    try:
        payload: Any = signing.Signer(salt=VERIFY_SALT).unsign_object(token)
        user_id, digest, issued = payload["u"], payload["e"], payload["t"]
        if not isinstance(user_id, str) or not isinstance(digest, str) or not isinstance(issued, int):
            raise ValueError("unexpected payload")
        issued_at = dt.datetime.fromtimestamp(issued, tz=dt.UTC)
        user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    except (signing.BadSignature, ValueError, TypeError, KeyError, OverflowError, OSError, ValidationError):
        return TokenCheck(TokenState.INVALID)
    if user is None:
        return TokenCheck(TokenState.INVALID)
    expires_at = issued_at + verification_lifetime()
    email = getattr(user, "email", "")
    if not email or not constant_time_compare(digest, _address_digest(email)):
        return TokenCheck(TokenState.OLD_ADDRESS, user, expires_at)
    if verified_email(user) is not None:
        return TokenCheck(TokenState.ALREADY_VERIFIED, user, expires_at)
    if (now or utcnow()) >= expires_at:
        return TokenCheck(TokenState.EXPIRED, user, expires_at)
    return TokenCheck(TokenState.VALID, user, expires_at)


def verify_email(token: str, *, now: dt.datetime | None = None) -> TokenCheck:
    """Verify the address a token was made for. Returns the check; the address is verified iff VALID.

    The account's profile row is locked, so a link opened twice at once verifies (and audits) once.
    """
    now = now or utcnow()
    with transaction.atomic():
        check = check_verification_token(token, now=now)
        if check.state is not TokenState.VALID or check.user is None:
            return check
        Profile.objects.select_for_update().get_or_create(user=check.user)
        check = check_verification_token(token, now=now)  # re-read under the lock
        if check.state is not TokenState.VALID or check.user is None:
            return check
        mark_email_verified(check.user, now=now)
        audit.record(event=AuditEvent.EMAIL_VERIFIED, actor=check.user, subject_user=check.user, now=now)
    return check


# --- mails (queued by accounts.emails, sent by the worker) ------------------------------------------


#: How mails and pages write a moment: ``7 December 2026, 12:00 UTC`` (German ``7. Dezember 2026, ...``).
MOMENT_FORMAT = pgettext_lazy("date and time (Django date format)", "j F Y, H:i T")


def when_words(moment: dt.datetime) -> str:
    """A moment as mails write it, in the active language: ``7 December 2026, 12:00 UTC`` (in the portal's
    time zone)."""
    return dateformat.format(timezone.localtime(moment), str(MOMENT_FORMAT))


def send_verification_email(user: Account, *, now: dt.datetime | None = None) -> bool:
    """Queue a fresh verification link to the account's current address. True if it was queued."""
    email = getattr(user, "email", "")
    if not email:
        return False
    now = now or utcnow()
    token = make_verification_token(user, now=now)
    language = mail_language(user)
    with emails.in_language(language):
        expires_at = when_words(now + verification_lifetime())
    context = {
        "username": user.get_username(),
        "email": email,
        "link": absolute_url(reverse("accounts:verify-email", kwargs={"token": token})),
        "hours": settings.ENROLL_EMAIL_VERIFICATION_HOURS,
        "expires_at": expires_at,
        "profile_url": absolute_url(reverse("accounts:profile")),
    }
    emails.send("accounts/email/verify_email", to=email, context=context, language=language)
    return True


def send_email_changed_notice(user: Account, *, old_email: str) -> bool:
    """Tell the previous address that the account's address changed (so a take-over does not go unseen)."""
    if not old_email:
        return False
    context = {
        "username": user.get_username(),
        "old_email": old_email,
        "new_email": getattr(user, "email", ""),
        "password_reset_url": absolute_url(reverse("accounts:password-reset")),
    }
    emails.send("accounts/email/email_changed", to=old_email, context=context, language=mail_language(user))
    return True


def queue_password_reset(email: str) -> None:
    """Queue the password reset of whatever account has ``email``: the task looks the account up.

    The request that asks does the same work, and answers the same, whether or not an account exists:
    no query about accounts, one task (docs/MAIL.md)."""
    emails.after_commit(mail_password_reset, email=email)


@task()
def mail_password_reset(email: str) -> int:
    """The task: mail a link to choose a new password to each active account with ``email`` and a usable
    password (Django's rules, :meth:`PasswordResetForm.get_users`). Returns how many were sent."""
    sent = 0
    for user in PasswordResetForm().get_users(email):
        context = {
            "username": user.get_username(),
            "uid": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
            "portal_url": portal_url(),
            "reset_hours": max(1, settings.PASSWORD_RESET_TIMEOUT // 3600),
        }
        sent += emails.send_now(
            "accounts/email/password_reset", to=user.email, context=context, language=mail_language(user)
        )
    return sent


# --- account changes -------------------------------------------------------------------------------


def email_in_use(email: str, *, exclude: Account | None = None) -> bool:
    """Whether another account already has this address (compared case-insensitively)."""
    users = get_user_model()._default_manager.filter(email__iexact=email.strip())
    if exclude is not None:
        users = users.exclude(pk=exclude.pk)
    return users.exists()


class UsernameTaken(Exception):
    """Another account took the name, or a look-alike of it, while the sign-up form was being checked."""


#: PostgreSQL advisory lock key that serialises sign-ups' look-alike checks ("signup" in ASCII).
_SIGN_UP_LOCK_KEY = 0x7369676E7570


def _lock_usernames() -> None:
    """Hold the sign-up lock until the transaction ends (SQLite: the IMMEDIATE transaction holds the
    database's write lock already), so two look-alike names cannot both pass the check at once."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SIGN_UP_LOCK_KEY])


def sign_up(
    *, username: str, email: str, password: str, language: str = "", now: dt.datetime | None = None
) -> Account:
    """Create the account and its profile and audit it, all or nothing. The caller sends the mail.

    ``language`` (the sign-up page's) becomes the person's language (mails; pages after login) if it is one
    of ``settings.LANGUAGES``.

    The look-alike check (:func:`accounts.usernames.clashing_account`) runs again under a lock: UsernameTaken
    if another sign-up took the name or a look-alike since the form checked it.
    """
    now = now or utcnow()
    manager: Any = get_user_model()._default_manager
    with transaction.atomic():
        _lock_usernames()
        if usernames.clashing_account(username) is not None:
            raise UsernameTaken(usernames.LOOK_ALIKE)
        user: Account = manager.create_user(username=username, email=email, password=password)
        Profile.objects.create(user=user, language=known_language(language))
        audit.record(event=AuditEvent.SIGN_UP, actor=user, subject_user=user, now=now)
    return user


def change_email(user: Account, new_email: str, *, request: HttpRequest | None = None) -> str:
    """Give the account a new address, unverified, and audit it. Returns the old address."""
    old_email: str = getattr(user, "email", "")
    with transaction.atomic():
        user.email = new_email
        user.save(update_fields=["email"])
        Profile.objects.update_or_create(
            user=user, defaults={"email_verified_at": None, "verified_email": ""}
        )
        auditing.record_account_event(
            AuditEvent.EMAIL_CHANGED, user, request, detail=f"from {old_email!a} to {new_email!a}"
        )
    return old_email
