"""System checks for the CA app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Warning

from ca.pki.lint import uri_problem


def check_public_url(
    *, app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ca.W001: ENROLL_PUBLIC_URL goes into every certificate (CRL and CA URLs); linters must accept it."""
    url = f"{settings.ENROLL_PUBLIC_URL}/"
    problem = uri_problem(url)
    if problem is None:
        return []
    consequence = (
        "every certificate would fail the RFC 5280 lint and no request could be issued"
        if settings.ENROLL_LINT_BEFORE_SIGN
        else "certificates carry a URI that violates RFC 5280 (ENROLL_LINT_BEFORE_SIGN is off, so they are "
        "issued anyway)"
    )
    return [
        Warning(
            f"ENROLL_PUBLIC_URL={settings.ENROLL_PUBLIC_URL} cannot go into certificates: {problem}; "
            f"{consequence}.",
            hint="Set ENROLL_PUBLIC_URL to the portal's fully qualified name (https://pki.example.com) or, "
            "for a local trial, http://127.0.0.1:8000.",
            id="ca.W001",
        )
    ]
