"""System checks for the accounts app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Warning

CONSOLE_BACKEND = "django.core.mail.backends.console.EmailBackend"


def check_email_backend(
    *, app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """accounts.W001: in production, console mail reaches nobody (no verification, no password reset)."""
    if settings.DEBUG or settings.EMAIL_BACKEND != CONSOLE_BACKEND:
        return []
    return [
        Warning(
            "E-mail goes to the console backend while DEBUG is off: verification links, password resets "
            "and certificate notices only reach the log, never the people they are for.",
            hint="Set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, DEFAULT_FROM_EMAIL "
            "as needed) in the environment so mail is sent over SMTP.",
            id="accounts.W001",
        )
    ]
