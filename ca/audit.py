"""The audit log: every sign-up, submission, decision, issuance, revocation and CRL publication.

Callers record inside the same transaction as the change, so an entry exists exactly when the change does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from ca.clock import utcnow
from ca.models import AuditEntry, AuditEvent
from ca.types import Account


def record(
    *,
    event: AuditEvent,
    actor: Account | None = None,
    subject_user: Account | None = None,
    ca_slug: str = "",
    request_sha256: str = "",
    serial: str = "",
    crl_number: int | None = None,
    detail: str = "",
    now: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry. ``actor`` is who did it (None: the system or the operator's command line)."""
    return AuditEntry.objects.create(
        created_at=now or utcnow(),
        event=event,
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        subject_user=subject_user.get_username() if subject_user is not None else "",
        ca_slug=ca_slug,
        request_sha256=request_sha256,
        serial=serial,
        crl_number=crl_number,
        detail=detail[:2000],
    )


@dataclass(frozen=True, kw_only=True)
class AuditItem:
    """One entry for :func:`record_many`; the fields mean what :func:`record`'s arguments mean."""

    event: AuditEvent
    actor: Account | None = None
    subject_user: Account | None = None
    ca_slug: str = ""
    request_sha256: str = ""
    serial: str = ""
    crl_number: int | None = None
    detail: str = ""


def record_many(items: Sequence[AuditItem], *, now: dt.datetime | None = None) -> None:
    """Append several entries in one statement, in the given order (bulk approval)."""
    when = now or utcnow()
    AuditEntry.objects.bulk_create(
        [
            AuditEntry(
                created_at=when,
                event=item.event,
                actor=item.actor,
                actor_name=item.actor.get_username() if item.actor is not None else "",
                subject_user=item.subject_user.get_username() if item.subject_user is not None else "",
                ca_slug=item.ca_slug,
                request_sha256=item.request_sha256,
                serial=item.serial,
                crl_number=item.crl_number,
                detail=item.detail[:2000],
            )
            for item in items
        ]
    )
