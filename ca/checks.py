"""System checks for the CA app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.db import DatabaseError

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


def check_unstored_serials(
    *, app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ca.W002: serials reserved long ago whose certificate was never stored (a crash between signing and
    storing): each may be a signed certificate nobody knows, so the operator revokes it by serial."""
    from ca.clock import utcnow
    from ca.services import reservations

    try:
        found = reservations.unstored(now=utcnow())
        count = found.count()
        sample = [f"{r.serial} on {r.ca.slug} ({r.purpose})" for r in found[:10]]
    except DatabaseError:  # not migrated yet, or no database to ask: nothing to report
        return []
    if not count:
        return []
    return [
        Warning(
            f"{count} serial number(s) were reserved more than {reservations.UNSTORED_AFTER} ago and no "
            f"certificate with them was stored: {'; '.join(sample)}{' ...' if count > len(sample) else ''}. "
            "The portal may have stopped between signing and storing, so such a certificate may exist.",
            hint="Revoke each with `manage.py revoke SERIAL --reason superseded`: it goes on the CRL.",
            id="ca.W002",
        )
    ]
