"""Propagation to front servers: which CRL each registered front server installed, each CA's CRL health.

The facts come only from signed install reports of registered front servers
(:mod:`ca.services.frontservers`); a download of a CRL proves nothing and is not recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from django.db.models import OuterRef, Subquery
from django.db.models.functions import Length

from ca.clock import utcnow
from ca.models import (
    CertificateAuthority,
    CrlPublication,
    FrontServer,
    FrontServerCrl,
    FrontServerOutcome,
)
from ca.services import crl, reservations

logger = logging.getLogger(__name__)


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


#: Seconds a front server may take, beyond its polling interval, to install a new CRL before it counts as
#: late (red); within it, a node behind the newest CRL is "catching up" (amber).
MARGIN = 15.0
#: A node silent longer than this many heartbeats is red.
SILENT_HEARTBEATS = 2


class NodeState(StrEnum):
    """Why a front server has its color for one CA (the first that applies, in this order)."""

    NEVER_REPORTED = "never_reported"  # red: registered, no signed report yet
    SILENT = "silent"  # red: no report for longer than 2 x its heartbeat
    FAILED = "failed"  # red: its last run failed (the error is kept for staff)
    MISSING = "missing"  # red: it holds no CRL of this CA
    LATE = "late"  # red: behind the newest CRL, published longer ago than interval + MARGIN
    CATCHING_UP = "catching_up"  # amber: behind, but the newest CRL is younger than interval + MARGIN
    CURRENT = "current"  # green: it has installed the newest CRL (or a newer number)

    @property
    def text(self) -> str:
        return _STATE_TEXT[self]


_STATE_TEXT = {
    NodeState.NEVER_REPORTED: "has never reported",
    NodeState.SILENT: "has gone silent",
    NodeState.FAILED: "its last run failed",
    NodeState.MISSING: "holds no CRL of this CA",
    NodeState.LATE: "is behind the newest CRL",
    NodeState.CATCHING_UP: "is catching up",
    NodeState.CURRENT: "has the newest CRL",
}


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One registered front server as seen for one CA."""

    node: str
    color: CrlColor
    state: NodeState
    number: int | None  # the CRL number of this CA it installed
    installed_at: dt.datetime | None  # when it first reported that number
    last_report_at: dt.datetime | None
    interval: float | None
    heartbeat: float | None
    #: The error of its last run when that failed; staff only (it may name paths and hosts).
    error: str
    now: dt.datetime

    @property
    def installed_seconds_ago(self) -> int | None:
        return None if self.installed_at is None else int((self.now - self.installed_at).total_seconds())

    @property
    def last_report_seconds_ago(self) -> int | None:
        if self.last_report_at is None:
            return None
        return int((self.now - self.last_report_at).total_seconds())

    @property
    def current(self) -> bool:
        return self.state is NodeState.CURRENT


def node_health(
    *,
    server: FrontServer,
    installed: FrontServerCrl | None,
    newest: CrlPublication | None,
    now: dt.datetime,
) -> NodeHealth:
    """The color of ``server`` for the CA whose newest CRL is ``newest`` (the rule of :class:`NodeState`)."""
    state, color = _node_state(server=server, installed=installed, newest=newest, now=now)
    return NodeHealth(
        node=server.name,
        color=color,
        state=state,
        number=installed.number if installed else None,
        installed_at=installed.installed_at if installed else None,
        last_report_at=server.last_report_at,
        interval=server.interval,
        heartbeat=server.heartbeat,
        error=server.last_error if server.last_outcome == FrontServerOutcome.FAILED else "",
        now=now,
    )


def _node_state(
    *,
    server: FrontServer,
    installed: FrontServerCrl | None,
    newest: CrlPublication | None,
    now: dt.datetime,
) -> tuple[NodeState, CrlColor]:
    if server.last_report_at is None:
        return NodeState.NEVER_REPORTED, CrlColor.RED
    heartbeat = server.heartbeat or 0.0
    if (now - server.last_report_at).total_seconds() > SILENT_HEARTBEATS * heartbeat:
        return NodeState.SILENT, CrlColor.RED
    if server.last_outcome == FrontServerOutcome.FAILED:
        return NodeState.FAILED, CrlColor.RED
    if installed is None:
        return NodeState.MISSING, CrlColor.RED
    if newest is None or installed.number >= newest.number:
        return NodeState.CURRENT, CrlColor.GREEN
    allowed = dt.timedelta(seconds=(server.interval or 0.0) + MARGIN)
    if now - newest.this_update > allowed:
        return NodeState.LATE, CrlColor.RED
    return NodeState.CATCHING_UP, CrlColor.AMBER


@dataclass(frozen=True, slots=True)
class CrlHealth:
    """One CA's newest CRL as stored (its DER not loaded), its color, and its registered front servers."""

    ca: CertificateAuthority
    crl: CrlPublication | None
    size: int  # bytes of the CRL's DER
    seconds_left: int
    color: CrlColor
    nodes: list[NodeHealth]
    #: Serials reserved long ago and never stored: each may be a signed certificate the CRL must list.
    unstored_serials: list[str] = field(default_factory=list)

    @property
    def green(self) -> bool:
        """The CRL and every registered front server of this CA are green."""
        return self.color is CrlColor.GREEN and all(n.color is CrlColor.GREEN for n in self.nodes)

    @property
    def summary(self) -> str:
        """E.g. "CRL #42: web1, web2 have it; web3 is catching up (#41 since 10:02)"."""
        if self.crl is None:
            return "no CRL yet"
        if not self.nodes:
            return f"CRL #{self.crl.number}: no front server registered"
        current = [n.node for n in self.nodes if n.current]
        others = []
        for n in self.nodes:
            if n.current:
                continue
            held = f" (#{n.number} since {n.installed_at:%H:%M})" if n.installed_at is not None else ""
            others.append(f"{n.node} {n.state.text}{held}")
        parts = [f"{', '.join(current)} {'has' if len(current) == 1 else 'have'} it"] if current else []
        return f"CRL #{self.crl.number}: " + "; ".join(parts + others)


def crl_healths(
    *,
    cas: Sequence[CertificateAuthority] | None = None,
    now: dt.datetime | None = None,
    with_unstored: bool = False,
) -> list[CrlHealth]:
    """Every CA's (or ``cas``') newest CRL as stored (looking does not re-sign it), its color, and each
    front server registered for it, in a fixed number of queries whatever the number of CAs and nodes."""
    now = now or utcnow()
    if cas is None:
        cas = list(CertificateAuthority.objects.defer("certificate_der").order_by("created_at", "pk"))
    ids = [ca.pk for ca in cas]
    if not ids:
        return []
    newest_number = CrlPublication.objects.filter(ca=OuterRef("ca")).order_by("-number").values("number")[:1]
    newest = {
        publication.ca_id: publication
        for publication in CrlPublication.objects.filter(ca_id__in=ids, number=Subquery(newest_number))
        .annotate(size=Length("der"))
        .defer("der")
    }
    servers = list(
        FrontServer.objects.filter(cas__in=ids).distinct().prefetch_related("cas").order_by("name")
    )
    installed = {
        (row.front_server_id, row.ca_id): row
        for row in FrontServerCrl.objects.filter(ca_id__in=ids, front_server__in=[s.pk for s in servers])
    }
    unstored: dict[int, list[str]] = {}
    if with_unstored:
        for ca_id, serial in (
            reservations.unstored(now=now).filter(ca_id__in=ids).values_list("ca_id", "serial")
        ):
            if len(unstored.setdefault(ca_id, [])) < 50:
                unstored[ca_id].append(serial)
    return [
        _health(
            ca=ca,
            latest=newest.get(ca.pk),
            nodes=[
                node_health(
                    server=s, installed=installed.get((s.pk, ca.pk)), newest=newest.get(ca.pk), now=now
                )
                for s in servers
                if _carries(s, ca)
            ],
            unstored=unstored.get(ca.pk, []),
            now=now,
        )
        for ca in cas
    ]


def _carries(server: FrontServer, ca: CertificateAuthority) -> bool:
    return any(c.pk == ca.pk for c in server.cas.all())


def crl_health(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> CrlHealth:
    """The newest CRL of ``ca`` as stored (looking does not re-sign it), its color, its front servers and
    the serials reserved long ago and never stored."""
    (health,) = crl_healths(cas=[ca], now=now, with_unstored=True)
    return health


def all_green(healths: Iterable[CrlHealth]) -> bool:
    """Every CRL and every registered front server is green (``/pki/health.json`` answers 200)."""
    return all(h.green for h in healths)


def _health(
    *,
    ca: CertificateAuthority,
    latest: CrlPublication | None,
    nodes: list[NodeHealth],
    unstored: list[str],
    now: dt.datetime,
) -> CrlHealth:
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
