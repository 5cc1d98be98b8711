"""Propagation to front servers: which CRL each one fetched, and each CA's CRL health."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum

from django.db.models.functions import Length

from ca.clock import utcnow
from ca.models import (
    CertificateAuthority,
    CrlFetch,
    CrlPublication,
)
from ca.services import crl, reservations

logger = logging.getLogger(__name__)


_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def record_fetch(
    *, ca: CertificateAuthority | int, node: str, number: int, now: dt.datetime | None = None
) -> None:
    """Note that front server ``node`` has CRL ``number`` of ``ca`` (or its id); ignores malformed names."""
    if not _NODE_NAME.fullmatch(node):
        return
    now = now or utcnow()
    ca_id = ca if isinstance(ca, int) else ca.pk
    updated = CrlFetch.objects.filter(ca_id=ca_id, node=node, number=number).update(last_seen=now)
    if not updated:
        CrlFetch.objects.update_or_create(
            ca_id=ca_id, node=node, defaults={"number": number, "since": now, "last_seen": now}
        )


@dataclass(frozen=True, slots=True)
class NodeState:
    node: str
    number: int
    since: dt.datetime
    last_seen: dt.datetime
    current: bool


#: Below this share of its lifetime left, a CRL's color is red.
RED_FRACTION = 0.1


class CrlColor(StrEnum):
    """A CRL's freshness, by the time left until nextUpdate compared with its lifetime.

    * green: more than half of the lifetime is left (a CRL is re-signed once half of it has passed);
    * amber: half or less is left: the re-sign is overdue (the cron job ``publish_crl --if-stale`` or the
      lazy re-sign on download did not run); front servers still accept it;
    * red: less than :data:`RED_FRACTION` is left, or it has expired (or none was ever published): front
      servers that check CRLs (nginx) refuse every client once nextUpdate passes.
    """

    GREEN = "green"
    AMBER = "amber"
    RED = "red"


def crl_color(*, this_update: dt.datetime, next_update: dt.datetime, now: dt.datetime) -> CrlColor:
    """Green while more than half the lifetime is left (not stale), amber down to a tenth, red below."""
    lifetime = next_update - this_update
    if lifetime <= dt.timedelta(0) or next_update - now < lifetime * RED_FRACTION:
        return CrlColor.RED
    if crl.past_half_time(this_update=this_update, next_update=next_update, now=now):
        return CrlColor.AMBER
    return CrlColor.GREEN


@dataclass(frozen=True, slots=True)
class CrlHealth:
    """One CA's newest CRL as stored (its DER not loaded), its color, and which front servers have it."""

    ca: CertificateAuthority
    crl: CrlPublication | None
    size: int  # bytes of the CRL's DER
    seconds_left: int
    color: CrlColor
    nodes: list[NodeState]
    #: Serials reserved long ago and never stored: each may be a signed certificate the CRL must list.
    unstored_serials: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """E.g. "CRL #42: web1, web2 have it; web3 still at #41 since 10:02"."""
        if self.crl is None:
            return "no CRL yet"
        current = [n.node for n in self.nodes if n.current]
        behind = [f"{n.node} still at #{n.number} since {n.since:%H:%M}" for n in self.nodes if not n.current]
        parts = [f"{', '.join(current)} {'has' if len(current) == 1 else 'have'} it"] if current else []
        return f"CRL #{self.crl.number}: " + ("; ".join(parts + behind) or "no front server has reported yet")


def crl_health(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> CrlHealth:
    """The newest CRL of ``ca`` as stored (looking does not re-sign it), its color and its propagation."""
    now = now or utcnow()
    latest = (
        CrlPublication.objects.filter(ca=ca)
        .annotate(size=Length("der"))
        .defer("der")
        .order_by("-number")
        .first()
    )
    nodes = [
        NodeState(f.node, f.number, f.since, f.last_seen, latest is not None and f.number >= latest.number)
        for f in CrlFetch.objects.filter(ca=ca).order_by("node")
    ]
    unstored = list(reservations.unstored(now=now, ca=ca).values_list("serial", flat=True)[:50])
    if latest is None:
        return CrlHealth(
            ca=ca,
            crl=None,
            size=0,
            seconds_left=0,
            color=CrlColor.RED,
            nodes=nodes,
            unstored_serials=unstored,
        )
    return CrlHealth(
        ca=ca,
        crl=latest,
        size=int(getattr(latest, "size", 0) or 0),
        seconds_left=int((latest.next_update - now).total_seconds()),
        color=crl_color(this_update=latest.this_update, next_update=latest.next_update, now=now),
        nodes=nodes,
        unstored_serials=unstored,
    )


# --- OCSP ------------------------------------------------------------------------------------------
