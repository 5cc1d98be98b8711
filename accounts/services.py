from __future__ import annotations

import datetime as dt

from accounts.models import Profile
from ca.clock import utcnow
from ca.types import Account


def verified_email(user: Account) -> str | None:
    """The user's e-mail address if it is verified and still the account's address, else None."""
    profile = Profile.objects.filter(user=user).first()
    email = getattr(user, "email", "")
    if profile is None or profile.email_verified_at is None or not email:
        return None
    return email if profile.verified_email.lower() == email.lower() else None


def mark_email_verified(user: Account, *, now: dt.datetime | None = None) -> None:
    Profile.objects.update_or_create(
        user=user,
        defaults={"email_verified_at": now or utcnow(), "verified_email": getattr(user, "email", "")},
    )
