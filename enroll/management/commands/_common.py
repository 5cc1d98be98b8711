from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from ca.types import Account


def get_user(username: str) -> Account:
    user_model = get_user_model()
    try:
        return user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        raise CommandError(f"There is no user '{username}'.") from None
