"""The database facts the signer checks a batch of certificates against: one SELECT per kind of fact for the
whole batch (a batch of 250 costs five queries, not 1,250), each naming the rule it reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from ca.models import BlockedKey, Certificate, IssuanceAuthorisation, SerialReservation
from ca.services.authorisations import Unused

#: Longest IN (...) list in one query (as :data:`ca.services.issuance._IN_CHUNK`).
_IN_CHUNK = 500


@dataclass(slots=True)
class Facts:
    """What the database says about the serials and keys of one batch."""

    #: serial -> (reservation state, the notAfter it was reserved for), serials reserved on the CA only
    reservations: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    #: serials of the CA with a stored certificate (signed before)
    stored: set[str] = field(default_factory=set)
    #: serial -> its authorisation not used yet (:func:`ca.services.authorisations.unused`)
    authorisations: dict[str, Unused] = field(default_factory=dict)
    #: blocked keys (:class:`ca.models.BlockedKey`) among the batch's
    blocked: set[str] = field(default_factory=set)
    #: key -> the owners of certificates that have it (one key, one account:
    #: :func:`ca.services.issuance.key_refusals`)
    holders: dict[str, set[int | None]] = field(default_factory=dict)


def _chunks(values: Sequence[str]) -> list[list[str]]:
    unique = sorted(set(values))
    return [unique[start : start + _IN_CHUNK] for start in range(0, len(unique), _IN_CHUNK)]


def facts(*, ca_id: int, serials: Sequence[str], spki_digests: Sequence[str]) -> Facts:
    """The :class:`Facts` of ``serials`` on the CA and of ``spki_digests``."""
    found = Facts()
    for part in _chunks(serials):
        rows = SerialReservation.objects.filter(ca_id=ca_id, serial__in=part)
        for serial, state, not_after in rows.values_list("serial", "state", "not_after"):
            found.reservations[serial] = (state, not_after)
        stored = Certificate.objects.filter(ca_id=ca_id, serial__in=part).values_list("serial", flat=True)
        found.stored.update(stored)
        grants = IssuanceAuthorisation.objects.filter(ca_id=ca_id, serial__in=part, used_at__isnull=True)
        columns = ("serial", "pk", "spki_sha256", "owner_id", "approver_name")
        for serial, pk, spki, owner_id, approver in grants.values_list(*columns):
            found.authorisations[serial] = Unused(pk, spki, owner_id, approver)
    for part in _chunks(spki_digests):
        found.blocked.update(
            BlockedKey.objects.filter(spki_sha256__in=part).values_list("spki_sha256", flat=True)
        )
        holders = (
            Certificate.objects.filter(spki_sha256__in=part).values_list("spki_sha256", "owner_id").distinct()
        )
        for spki, owner_id in holders:
            found.holders.setdefault(spki, set()).add(owner_id)
    return found
