"""Registered front servers and their signed install reports.

A front server ("node": nginx, Apache or node with ``enroll-crl-sync --node NAME --token-file FILE``) is
registered by the operator (``manage.py frontserver add NAME``): the portal makes an Ed25519 key pair,
keeps the public key and prints the private key once, as the node's token. After each run the node sends
a report signed with that key (wire format: :mod:`ca.pki.node_reports`) saying which CRL of each CA it has
*installed*. Only such reports count as evidence that a revocation reached a front server: the
revocation screen, ``/pki/health.json`` (:mod:`ca.services.propagation`) and the CRL numbering
(:func:`ca.services.crl.next_crl_number`) read what they recorded, never what an anonymous client sends.

:func:`accept_report` checks everything (format, node, signature, clock, nonce) before it writes anything:
a refused report changes nothing. Registering, rotating and removing are audited; reports are not (one per
node per minute), their facts are in the rows.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from django.db import IntegrityError, transaction
from django.db.models import Q

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError
from ca.models import (
    AuditEvent,
    CertificateAuthority,
    FrontServer,
    FrontServerCrl,
    FrontServerOutcome,
    ReportNonce,
)
from ca.pki import node_reports
from ca.pki.node_reports import MAX_CLOCK_SKEW, NODE_NAME, Report, ReportError
from ca.services import authorities
from ca.services.propagation import CrlColor, NodeState, crl_healths

logger = logging.getLogger(__name__)

#: How long a nonce is kept: a report carrying it is refused for its timestamp after 2 x the clock skew
#: allowed (the timestamp may be that far ahead of one check and behind a later one), plus some slack.
NONCE_KEPT = dt.timedelta(seconds=2 * MAX_CLOCK_SKEW + 60)
#: The largest CRL number stored (the columns are 63-bit); this portal never signs a larger one.
_MAX_STORED_NUMBER = 2**63 - 1


class Refusal(enum.StrEnum):
    """Why a report was refused: the core's :class:`ca.pki.node_reports.ReportProblem` and the portal's."""

    MALFORMED = node_reports.ReportProblem.MALFORMED.value
    BAD_SIGNATURE = node_reports.ReportProblem.BAD_SIGNATURE.value
    CLOCK_SKEW = node_reports.ReportProblem.CLOCK_SKEW.value
    UNKNOWN_NODE = "unknown_node"
    REPLAYED = "replayed"


class ReportRefused(CAError):
    """A report that was not accepted; nothing was written. ``problem`` says why, the message in words."""

    def __init__(self, problem: Refusal, message: str) -> None:
        super().__init__(message)
        self.problem = problem


# --- registration ----------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not NODE_NAME.fullmatch(name):
        raise CAError(
            f"'{name}' cannot be a front server's name: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (its host name, say)."
        )


def _get(name: str) -> FrontServer:
    server = FrontServer.objects.filter(name=name).first()
    if server is None:
        raise CAError(
            f"There is no front server named '{name}': manage.py frontserver list shows the registered ones."
        )
    return server


def _key_digest(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def register(
    *,
    name: str,
    cas: Sequence[CertificateAuthority] | None = None,
    actor: str,
    now: dt.datetime | None = None,
) -> tuple[FrontServer, str]:
    """Register front server ``name`` for the CRLs of ``cas`` (default: the default CA and its parents).

    Returns the server and its token (the base64 private key), to be saved as the node's token file. The
    private key is not stored: the token cannot be shown again, only replaced (:func:`rotate`).
    """
    now = now or utcnow()
    _check_name(name)
    carried = list(cas) if cas is not None else authorities.default_ca().chain()
    if not carried:
        raise CAError(f"Front server '{name}' must carry the CRL of at least one CA.")
    key = node_reports.new_node_key()
    public_key = node_reports.public_key_bytes(key)
    with transaction.atomic():
        if FrontServer.objects.filter(name=name).exists():
            raise CAError(
                f"A front server named '{name}' is registered already: choose another name, or give it "
                f"a new token with manage.py frontserver rotate {name}."
            )
        try:
            with transaction.atomic():
                server = FrontServer.objects.create(name=name, public_key=public_key, created_at=now)
        except IntegrityError:
            raise CAError(f"A front server named '{name}' is registered already.") from None
        server.cas.set(carried)
        audit.record(
            event=AuditEvent.FRONT_SERVER_REGISTERED,
            detail=(
                f"front server {name} registered by {actor}, key sha256 {_key_digest(public_key)}, "
                f"carries the CRLs of {', '.join(ca.slug for ca in carried)}"
            ),
            now=now,
        )
    logger.info("registered front server %s", name)
    return server, node_reports.token_for(key)


def rotate(*, name: str, actor: str, now: dt.datetime | None = None) -> str:
    """Give front server ``name`` a new key and return its token; the old token stops working at once."""
    now = now or utcnow()
    key = node_reports.new_node_key()
    public_key = node_reports.public_key_bytes(key)
    with transaction.atomic():
        server = _get(name)
        FrontServer.objects.filter(pk=server.pk).update(public_key=public_key, key_rotated_at=now)
        audit.record(
            event=AuditEvent.FRONT_SERVER_KEY_ROTATED,
            detail=f"front server {name}: new key sha256 {_key_digest(public_key)}, rotated by {actor}",
            now=now,
        )
    logger.info("rotated the key of front server %s", name)
    return node_reports.token_for(key)


def remove(*, name: str, actor: str, now: dt.datetime | None = None) -> None:
    """Forget front server ``name``, its key and what it reported; its reports are refused from now on."""
    now = now or utcnow()
    with transaction.atomic():
        server = _get(name)
        server.delete()
        audit.record(
            event=AuditEvent.FRONT_SERVER_REMOVED,
            detail=f"front server {name} removed by {actor}",
            now=now,
        )
    logger.info("removed front server %s", name)


@dataclass(frozen=True, slots=True)
class FrontServerSummary:
    """One registered front server for listings: the CAs it carries and its worst color over them."""

    server: FrontServer
    ca_slugs: list[str]
    color: CrlColor
    state: NodeState


_RANK = {CrlColor.GREEN: 0, CrlColor.AMBER: 1, CrlColor.RED: 2}


def front_servers(*, now: dt.datetime | None = None) -> list[FrontServerSummary]:
    """Every registered front server, by name, with its color (the worst over the CAs it carries)."""
    now = now or utcnow()
    servers = list(FrontServer.objects.prefetch_related("cas").order_by("name"))
    worst: dict[str, tuple[CrlColor, NodeState]] = {}
    for health in crl_healths(now=now):
        for node in health.nodes:
            known = worst.get(node.node)
            if known is None or _RANK[node.color] > _RANK[known[0]]:
                worst[node.node] = (node.color, node.state)
    summaries = []
    for server in servers:
        color, state = worst.get(server.name, (CrlColor.RED, NodeState.NEVER_REPORTED))
        summaries.append(
            FrontServerSummary(
                server=server, ca_slugs=[ca.slug for ca in server.cas.all()], color=color, state=state
            )
        )
    return summaries


# --- reports ---------------------------------------------------------------------------------------

_key_ids: dict[tuple[int, str], str] = {}


def authority_key_id(ca: CertificateAuthority) -> str:
    """The lower-case hex subjectKeyIdentifier of ``ca``'s certificate: the authorityKeyIdentifier its
    CRLs carry (cached per process by CA and certificate fingerprint)."""
    cache_key = (ca.pk, ca.fingerprint_sha256)
    known = _key_ids.get(cache_key)
    if known is None:
        certificate = ca.certificate
        try:
            ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            ski = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())
        known = _key_ids[cache_key] = ski.digest.hex()
    return known


def _refused(exc: ReportError) -> ReportRefused:
    return ReportRefused(Refusal(exc.problem.value), str(exc))


def _checked(*, body: bytes, signature: str, now: dt.datetime) -> tuple[Report, FrontServer]:
    """The report in ``body`` and its node, once every check passed (nothing is written here)."""
    try:
        report = node_reports.parse_report(body)
    except ReportError as exc:
        raise _refused(exc) from None
    server = FrontServer.objects.filter(name=report.node).prefetch_related("cas").first()
    if server is None:
        raise ReportRefused(
            Refusal.UNKNOWN_NODE,
            f"No front server named '{report.node}' is registered here: the portal's operator registers it "
            f"with manage.py frontserver add {report.node}.",
        )
    try:
        node_reports.check_signature(body=body, signature=signature, public_key=bytes(server.public_key))
        node_reports.check_clock(report=report, now_timestamp=now.timestamp())
    except ReportError as exc:
        raise _refused(exc) from None
    if any(entry.number > _MAX_STORED_NUMBER for entry in report.crls):
        raise ReportRefused(
            Refusal.MALFORMED, "A CRL number in the report is larger than any CRL number this portal signs."
        )
    if ReportNonce.objects.filter(front_server=server, nonce=report.nonce).exists():
        raise _replayed()
    return report, server


def _replayed() -> ReportRefused:
    return ReportRefused(
        Refusal.REPLAYED, "This report was received already (its nonce was seen): a report counts once."
    )


def accept_report(*, body: bytes, signature: str, now: dt.datetime | None = None) -> FrontServer:
    """Record a front server's signed install report; :class:`ReportRefused` (nothing written) otherwise.

    Refused: a malformed body, an unknown node, a signature that is not the node's key's, a timestamp more
    than :data:`ca.pki.node_reports.MAX_CLOCK_SKEW` seconds off, a nonce already seen from that node.
    Accepted: in one transaction, the nonce is stored (nonces older than :data:`NONCE_KEPT` are deleted),
    the node's last outcome, error, interval and heartbeat are updated, and for each CRL of a CA the node
    carries, the number it installed (``installed_at`` moves only when the number changes). Entries for CAs
    it does not carry are ignored.
    """
    now = now or utcnow()
    report, server = _checked(body=body, signature=signature, now=now)
    by_key_id = {authority_key_id(ca): ca for ca in server.cas.all()}
    numbers: dict[int, int] = {}
    for entry in report.crls:
        ca = by_key_id.get(entry.authority_key_id)
        if ca is not None:
            numbers[ca.pk] = entry.number
    with transaction.atomic():
        ReportNonce.objects.filter(seen_at__lt=now - NONCE_KEPT).delete()
        try:
            with transaction.atomic():
                ReportNonce.objects.create(front_server=server, nonce=report.nonce, seen_at=now)
        except IntegrityError:
            raise _replayed() from None
        in_order = Q(last_report_timestamp__isnull=True) | Q(last_report_timestamp__lte=report.timestamp)
        updated = FrontServer.objects.filter(
            in_order, pk=server.pk, public_key=bytes(server.public_key)
        ).update(
            last_report_at=now,
            last_report_timestamp=report.timestamp,
            last_outcome=FrontServerOutcome(report.outcome.value),
            last_error=report.error if report.outcome is node_reports.ReportOutcome.FAILED else "",
            interval=report.interval,
            heartbeat=report.heartbeat,
        )
        if (
            not updated
            and FrontServer.objects.filter(
                pk=server.pk, public_key=bytes(server.public_key), last_report_timestamp__gt=report.timestamp
            ).exists()
        ):  # an older report overtaken by a newer one: it must not move the numbers back
            raise ReportRefused(
                Refusal.REPLAYED,
                f"This report (timestamp {report.timestamp}) is older than the last one accepted from front "
                f"server '{server.name}'; it changes nothing.",
            )
        if not updated:  # removed, or its key rotated, since the checks: roll back the nonce too
            raise ReportRefused(
                Refusal.BAD_SIGNATURE,
                f"Front server '{server.name}' was removed or given a new key while this report arrived.",
            )
        held = {row.ca_id: row for row in FrontServerCrl.objects.filter(front_server=server)}
        for ca_id, number in numbers.items():
            row = held.get(ca_id)
            if row is None:
                FrontServerCrl.objects.create(
                    front_server=server, ca_id=ca_id, number=number, installed_at=now, reported_at=now
                )
            elif row.number == number:
                FrontServerCrl.objects.filter(pk=row.pk).update(reported_at=now)
            else:
                FrontServerCrl.objects.filter(pk=row.pk).update(
                    number=number, installed_at=now, reported_at=now
                )
    server.refresh_from_db()
    return server
