from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from ca.types import Account


def get_user(username: str) -> Account:
    user_model = get_user_model()
    try:
        return user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        raise CommandError(f"There is no user '{username}'.") from None


def read_input(name: str, *, limit: int) -> bytes:
    """The content of file ``name`` (or standard input for ``-``), at most ``limit + 1`` bytes, so the
    caller's size check sees an oversized input without reading all of it."""
    try:
        if name == "-":
            return sys.stdin.buffer.read(limit + 1)
        with Path(name).open("rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise CommandError(f"{name}: {exc.strerror}") from None
