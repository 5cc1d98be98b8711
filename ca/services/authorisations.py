"""Issuance authorisations: the approver's word, committed before signing, that the signer checks.

The approving flow (``enroll.flows.approval``) writes them with the serials' reservations, in the same
committed transaction (:class:`Approval`, :func:`write`, through :func:`ca.services.issuance.reserve`),
before it locks the requests: one :class:`ca.models.IssuanceAuthorisation` per serial,
naming the request (its SHA-256), the key to certify, the owner and the approver. The signer process
(:mod:`ca.signer`) reads it from its own database connection, so it must be committed first, as the
reservation is. An authorisation whose request is not approved after all (decided by someone else
meanwhile) is harmless: its reservation is discarded, and the signer signs only RESERVED serials.

When the portal signs through the signer (``ENROLL_SIGNER_SOCKET``), the flow asks the signer whether it
is running first (:func:`signer_ready`): if not, it raises
:class:`CAError` saying so, and the flow leaves the requests as they were.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from ca.errors import from_core
from ca.models import CertificateAuthority, IssuanceAuthorisation, SerialReservation
from ca.types import Account


@dataclass(frozen=True, slots=True)
class Approved:
    """What one serial is authorised for: the request's SHA-256, its key's, and its owner's id."""

    request_sha256: str
    spki_sha256: str
    owner_id: int | None


@dataclass(frozen=True, slots=True)
class Approval:
    """An approver's word (None: the operator's command line) for serials about to be reserved: one
    request per serial, in the order of the reservations (:func:`ca.services.issuance.reserve`)."""

    approver: Account | None
    requests: Sequence[Approved]


def signer_ready() -> None:
    """Raise :class:`CAError` when the portal signs through the signer and the signer does not answer."""
    if not settings.ENROLL_SIGNER_SOCKET:
        return
    from ca.signer.client import ping  # the client only when configured

    with from_core():
        ping(path=settings.ENROLL_SIGNER_SOCKET)


def write(
    *,
    ca: CertificateAuthority,
    approval: Approval,
    reservations: Sequence[SerialReservation],
    now: dt.datetime,
) -> list[IssuanceAuthorisation]:
    """Write one authorisation per reservation (in the caller's transaction, which commits it before
    anything is signed): reservation i for ``approval.requests[i]``."""
    if len(reservations) != len(approval.requests):
        raise ValueError("one approved request per reservation")
    approver = approval.approver
    rows = [
        IssuanceAuthorisation(
            ca=ca,
            serial=reservation.serial,
            request_sha256=approved.request_sha256,
            spki_sha256=approved.spki_sha256,
            owner_id=approved.owner_id,
            approver=approver,
            approver_name=approver.get_username() if approver is not None else "",
            created_at=now,
        )
        for reservation, approved in zip(reservations, approval.requests, strict=True)
    ]
    return IssuanceAuthorisation.objects.bulk_create(rows, batch_size=500)


@dataclass(frozen=True, slots=True)
class Unused:
    """An authorisation not used yet: its id, the key it names, the owner and who approved."""

    pk: int
    spki_sha256: str
    owner_id: int | None
    approver_name: str


def unused(*, ca: CertificateAuthority, serial: str) -> Unused | None:
    """The authorisation to sign ``serial`` on ``ca``, if there is one and it was not used yet."""
    rows = (
        IssuanceAuthorisation.objects.filter(ca=ca, serial=serial, used_at__isnull=True)
        .order_by()
        .values_list("pk", "spki_sha256", "owner_id", "approver_name")[:1]
    )
    return next((Unused(*row) for row in rows), None)


def mark_used(*, ids: Sequence[int], now: dt.datetime) -> None:
    """Note that the signer signed with these authorisations (the signer's writer, after signing)."""
    for start in range(0, len(ids), 500):
        IssuanceAuthorisation.objects.filter(pk__in=ids[start : start + 500], used_at__isnull=True).update(
            used_at=now
        )
