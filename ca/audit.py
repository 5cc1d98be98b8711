"""The audit log: every sign-up, submission, decision, issuance, revocation and CRL publication.

Callers record inside the same transaction as the change, so an entry exists exactly when the change does.
"""

from __future__ import annotations

import datetime as dt

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
