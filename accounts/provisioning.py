"""Accounts made by an operator (``manage.py create_user``), under the rules of sign-up.

The username and the e-mail address go through the same checks as the sign-up form
(:mod:`accounts.usernames`: the allowed characters and the look-alike rule; :mod:`accounts.addresses`: an
address a certificate can carry, not another account's), the password through Django's password
validators, and the account is made by :func:`accounts.services.sign_up` (profile, audit, the look-alike
check again under the lock). A refusal is :class:`Refused`, with the plain-words reason; nothing is stored.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts import addresses, services, usernames
from ca import audit
from ca.clock import utcnow
from ca.models import AuditEvent
from ca.types import Account

#: A password made for the operator to hand over: 24 URL-safe characters (144 random bits).
GENERATED_PASSWORD_BYTES = 18


class Refused(ValueError):
    """The account cannot be made: the message says why and what to change."""


@dataclass(frozen=True)
class NewAccount:
    user: Account
    #: The password made for it when none was given (to be shown once), else "".
    generated_password: str
    verified: bool


def checked_username(name: str) -> str:
    """The username as sign-up stores it, or Refused with the same reason sign-up gives."""
    name = usernames.normalise(name.strip())
    problem = usernames.problem(name)
    if problem is not None:
        raise Refused(f"Username {name!r}: {problem}")
    if usernames.clashing_account(name) is not None:
        raise Refused(f"Username {name!r}: {usernames.LOOK_ALIKE}")
    return name


def checked_email(address: str) -> str:
    """The address as certificates carry it, or Refused (not usable, or another account's)."""
    try:
        email = addresses.certificate_form(address)
    except addresses.AddressProblem as refusal:
        raise Refused(f"E-mail address {address!r}: {refusal}") from None
    if services.email_in_use(email):
        raise Refused(f"E-mail address {email!r}: another account has it already.")
    return email


def create_user(
    *,
    username: str,
    email: str,
    password: str | None = None,
    verified: bool = False,
    now: dt.datetime | None = None,
) -> NewAccount:
    """Make an account as sign-up does; ``verified`` marks its address verified at once (audited).

    Without ``password`` a random one is made and returned (:attr:`NewAccount.generated_password`). An
    unverified account is sent the verification link, as at sign-up.
    """
    now = now or utcnow()
    name = checked_username(username)
    address = checked_email(email)
    generated = "" if password is not None else secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    chosen = password if password is not None else generated
    probe = get_user_model()(username=name, email=address)
    try:
        validate_password(chosen, probe)
    except ValidationError as invalid:
        raise Refused("Password: " + " ".join(invalid.messages)) from None
    with transaction.atomic():
        try:
            user = services.sign_up(username=name, email=address, password=chosen, now=now)
        except services.UsernameTaken as taken:
            raise Refused(f"Username {name!r}: {taken}") from None
        if verified:
            services.mark_email_verified(user, now=now)
            audit.record(
                event=AuditEvent.EMAIL_VERIFIED,
                subject_user=user,
                detail="verified by an operator (manage.py create_user)",
                now=now,
            )
    if not verified:
        services.send_verification_email(user, now=now)
    return NewAccount(user=user, generated_password=generated, verified=verified)
