"""Serial reservations: every serial is drawn and committed here before anything is signed with it.

The order is the one boulder uses. A serial is drawn at random (:func:`ca.pki.serials.new_serial`, 159
bits from the OS CSPRNG) and inserted into :class:`ca.models.SerialReservation` in a transaction of its
own that commits before signing starts; the unique constraint on (CA, serial) is the collision guard, and
a collision is an error, never a silent re-draw. Then the certificate is drafted, linted, signed by the CA
key and stored with that serial. Whatever happens after the reservation commits, the serial is known: a
process that dies between signing and storing leaves a reservation still RESERVED, which :func:`unstored`
finds (the system check ``ca.W002`` and the CRL health page report it) and
:func:`ca.services.revocation.revoke_serial` puts on the CRL.

A serial is *used up* once a CA signature carries it. A certificate refused before the CA key signs it
(a blocked key, a lint finding on the throwaway-signed draft, a CA key that cannot sign) uses up none:
its reservation is closed by :func:`discard` with the reason, so the serial is on no CA-signed object,
never needs revoking, never goes on a CRL and is not reported; the row stays as the record of the
refusal. (Serials are 159 random bits: there is no pool to hand one back to, and the unique constraint
keeps it from being drawn again.)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from ca.errors import CAError
from ca.models import CertificateAuthority, ReservationState, SerialReservation
from ca.pki.serials import format_serial, new_serial

logger = logging.getLogger(__name__)

#: A reservation this old with no certificate is reported: issuing a batch takes seconds, not minutes.
UNSTORED_AFTER = dt.timedelta(minutes=10)

SERIAL_COLLISION = (
    "A freshly drawn serial number is taken already on this CA, which should never happen with 159 random "
    "bits: nothing was signed. Try again; if it happens again, the server's random number generator is "
    "broken and the operator must look into it before issuing anything."
)


def reserve(
    *,
    ca: CertificateAuthority,
    purposes: Sequence[str],
    not_after: dt.datetime,
    now: dt.datetime,
    then: Callable[[list[SerialReservation]], object] | None = None,
) -> list[SerialReservation]:
    """Draw one serial per purpose and commit them (one INSERT) before anything is signed.

    Runs in a durable transaction of its own: called inside another transaction it raises RuntimeError,
    because a reservation rolled back with its caller would leave a signed serial unrecorded. ``then``
    writes what belongs with the reservations (their issuance authorisations) in that same transaction.
    Raises :class:`CAError` (:data:`SERIAL_COLLISION`) when a drawn serial is taken; nothing is reserved
    then.
    """
    rows = [
        SerialReservation(
            ca=ca,
            serial=format_serial(serial=new_serial()),
            reserved_at=now,
            purpose=purpose[:200],
            not_after=not_after,
        )
        for purpose in purposes
    ]
    if len({row.serial for row in rows}) != len(rows):
        raise CAError(SERIAL_COLLISION)
    try:
        with transaction.atomic(durable=True):
            SerialReservation.objects.bulk_create(rows)
            if then is not None:
                then(rows)
    except IntegrityError:
        logger.error("serial collision on CA %s: a freshly drawn serial is reserved already", ca.slug)
        raise CAError(SERIAL_COLLISION) from None
    return rows


def discard(*, reservations: Sequence[SerialReservation], reason: str, now: dt.datetime) -> None:
    """Release these serials: no certificate with them left the CA, and issuance discards only serials
    that no CA signature carried (refused before the CA key signed: see the module's docstring)."""
    _close(reservations, state=ReservationState.DISCARDED, note=reason[:500], now=now)


def mark_issued(*, reservations: Sequence[SerialReservation], now: dt.datetime) -> None:
    """Note that the certificates with these serials are stored (in the transaction that stores them)."""
    _close(reservations, state=ReservationState.ISSUED, note="", now=now)


def _close(
    reservations: Sequence[SerialReservation], *, state: ReservationState, note: str, now: dt.datetime
) -> None:
    ids = [reservation.pk for reservation in reservations if reservation.pk is not None]
    for start in range(0, len(ids), 500):
        SerialReservation.objects.filter(
            pk__in=ids[start : start + 500], state=ReservationState.RESERVED
        ).update(state=state, closed_at=now, note=note)


def unstored(*, now: dt.datetime, ca: CertificateAuthority | None = None) -> QuerySet[SerialReservation]:
    """Reservations still open :data:`UNSTORED_AFTER` after they were made.

    Each may stand for a certificate that was signed and never stored: revoke it by serial to be safe
    (:func:`ca.services.revocation.revoke_serial`). Reads the partial index of open reservations only.
    """
    found = SerialReservation.objects.filter(
        state=ReservationState.RESERVED, reserved_at__lt=now - UNSTORED_AFTER
    ).select_related("ca")
    return found.filter(ca=ca) if ca is not None else found
