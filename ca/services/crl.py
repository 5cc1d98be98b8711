"""CRL publication: numbering, lifetime, carry-over of the previous CRL's entries, the CRL to serve."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.db.models import Max, QuerySet

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import (
    AuditEvent,
    Certificate,
    CertificateAuthority,
    CrlPublication,
    FrontServerCrl,
    ReservationState,
    Revocation,
    RevocationReason,
    SerialReservation,
)
from ca.pki import crl as pki_crl
from ca.pki import signing as pki_signing
from ca.services import keys
from ca.types import Account

logger = logging.getLogger(__name__)


def crl_lifetime() -> dt.timedelta:
    return dt.timedelta(hours=settings.ENROLL_CRL_LIFETIME_HOURS)


def is_stale(publication: CrlPublication, *, now: dt.datetime) -> bool:
    """A CRL is re-signed once half of its lifetime has passed, long before nextUpdate."""
    return past_half_time(this_update=publication.this_update, next_update=publication.next_update, now=now)


def past_half_time(*, this_update: dt.datetime, next_update: dt.datetime, now: dt.datetime) -> bool:
    return now >= this_update + (next_update - this_update) / 2


#: Revocations dated up to this long before the previous CRL read its entries are read again (and kept
#: out when that CRL lists them already): several web hosts' clocks may differ a little.
CARRY_OVER_SLACK = dt.timedelta(minutes=10)
#: Up to this many of those are looked up in the previous CRL one by one; more make a set of its serials.
_SINGLE_LOOKUPS = 4


def publish_crl(
    *,
    ca: CertificateAuthority,
    now: dt.datetime | None = None,
    unless_newer_than: int | None = None,
    by: Account | None = None,
) -> CrlPublication:
    """Sign and store a new CRL for ``ca`` with every revoked certificate that has not long expired.

    The CA row is locked for the whole step, so CRL numbers are strictly increasing and a CRL signed
    after a revocation commits always lists it. The number (:func:`next_crl_number`) keeps increasing
    even after an older database backup is restored.
    Entries stay until their certificate expired more than one CRL lifetime ago (RFC 5280 5.1.2.6:
    at least one regularly scheduled CRL after expiry lists it).

    The entries of the previous CRL are carried over as they were signed (:func:`_carry_over`): only
    revocations since then and the entries to drop are read. Without a usable previous CRL, every entry
    is read and built.
    """
    lifetime = crl_lifetime()
    with transaction.atomic():
        # NO KEY UPDATE, as in revoke_certificate: no deadlock with foreign-key checks at commit.
        locked = CertificateAuthority.objects.select_for_update(no_key=True).get(pk=ca.pk)
        now = now or utcnow()
        this_update = now.replace(microsecond=0)
        latest = CrlPublication.objects.filter(ca=locked).order_by("-number").defer("der").first()
        if unless_newer_than is not None and latest is not None and latest.number > unless_newer_than:
            # another process re-signed while this one waited for the lock
            return CrlPublication.objects.get(pk=latest.pk)
        number = next_crl_number(ca=locked, latest=latest.number if latest else None, now=now)
        with from_core():
            backend = keys.key_backend(locked)
            pki_signing.certified_public_key(backend=backend, certificate=locked.certificate)
        read_at = utcnow()
        cutoff = this_update - lifetime
        incremental = _carry_over(ca=locked, previous=latest, cutoff=cutoff) if latest is not None else None
        carried, entries = incremental or (
            [],
            _crl_entries(_revocations_listed(ca=locked, cutoff=cutoff))
            + _reserved_entries(ca=locked, cutoff=cutoff)
            + _revoked_children(ca=locked, cutoff=cutoff),
        )
        with from_core():  # a key backend that cannot sign (token gone) says so as a CAError
            der = pki_crl.build_crl_der(
                issuer=locked.certificate,
                backend=backend,
                number=number,
                this_update=this_update,
                next_update=this_update + lifetime,
                entries=entries,
                carried_over=carried,
            )
        count = len(carried) + len(entries)
        publication = CrlPublication.objects.create(
            ca=locked,
            number=number,
            this_update=this_update,
            next_update=this_update + lifetime,
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
            entries=count,
            created_at=read_at,
        )
        audit.record(
            event=AuditEvent.CRL_PUBLISHED,
            actor=by,
            ca_slug=locked.slug,
            crl_number=number,
            detail=f"{count} entries, next update {this_update + lifetime:%Y-%m-%d %H:%M} UTC",
            now=now,
        )
    logger.info(
        "published CRL #%s of CA %s with %s entries (%s)",
        number,
        locked.slug,
        count,
        f"{len(entries)} new, {len(carried)} carried over" if incremental else "built from all revocations",
    )
    return publication


def clock_floor(now: dt.datetime) -> int:
    """The lowest CRL number :func:`next_crl_number` gives at ``now``: the Unix time in milliseconds.

    Milliseconds, not seconds: the numbers run ahead of this floor only while more than one CRL is
    published per unit, and a burst of revocations (each publishes a CRL) within one second is common, one
    within a millisecond is not. RFC 5280 5.2.3 allows 20 octets; this needs 6 until the year 10889.
    """
    return (now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def next_crl_number(*, ca: CertificateAuthority, latest: int | None, now: dt.datetime) -> int:
    """The next cRLNumber (RFC 5280 5.2.3: monotonically increasing) of ``ca``.

    Above the newest stored number, the Unix time in milliseconds (:func:`clock_floor`) and the highest
    number a registered front server reported *installed* in a signed report
    (:class:`ca.models.FrontServerCrl`, written only by :func:`ca.services.frontservers.accept_report`):
    after an older database backup is restored, the numbers the portal published since the backup are gone
    from the CRL rows, but not from the clock, and the front servers that installed one of them said so.
    Nothing an anonymous client sends counts.
    """
    served = FrontServerCrl.objects.filter(ca=ca).aggregate(highest=Max("number"))["highest"]
    return max((latest or 0) + 1, (served or 0) + 1, clock_floor(now))


def _revocations_listed(*, ca: CertificateAuthority, cutoff: dt.datetime) -> QuerySet[Revocation]:
    """The revocations a CRL of ``ca`` lists: those of certificates expired after ``cutoff`` or valid."""
    return Revocation.objects.filter(certificate__ca=ca, certificate__not_after__gt=cutoff)


def _revoked_reservations(*, ca: CertificateAuthority, cutoff: dt.datetime) -> QuerySet[SerialReservation]:
    """Serials reserved and never stored, revoked by serial (:func:`ca.services.revocation.revoke_serial`)
    that a CRL of ``ca`` lists: the certificate that may carry one was valid until ``not_after``."""
    return SerialReservation.objects.filter(ca=ca, state=ReservationState.REVOKED, not_after__gt=cutoff)


def _reserved_entries(*, ca: CertificateAuthority, cutoff: dt.datetime) -> list[pki_crl.CrlEntry]:
    rows = _revoked_reservations(ca=ca, cutoff=cutoff).order_by("closed_at", "pk")
    return [
        pki_crl.CrlEntry(
            serial=int(row.serial, 16),
            revoked_at=row.closed_at or row.reserved_at,
            reason=RevocationReason(row.revocation_reason or RevocationReason.UNSPECIFIED).flag,
            invalidity_date=None,
        )
        for row in rows
    ]


def _revoked_children(*, ca: CertificateAuthority, cutoff: dt.datetime) -> list[pki_crl.CrlEntry]:
    """The CAs ``ca`` signed and ``manage.py revoke_ca`` revoked (their certificates are ``ca``'s too)."""
    rows = ca.children.filter(revoked_at__isnull=False, not_after__gt=cutoff).order_by("revoked_at", "pk")
    return [
        pki_crl.CrlEntry(
            serial=int(child.serial, 16),
            revoked_at=child.revoked_at,
            reason=RevocationReason(child.revocation_reason or RevocationReason.UNSPECIFIED).flag,
            invalidity_date=None,
        )
        for child in rows
        if child.revoked_at is not None
    ]


def _crl_entries(revocations: QuerySet[Revocation]) -> list[pki_crl.CrlEntry]:
    rows = revocations.order_by("revoked_at", "pk").values_list(
        "certificate__serial", "revoked_at", "reason", "invalidity_date"
    )
    return [
        pki_crl.CrlEntry(
            serial=int(serial, 16),
            revoked_at=revoked_at,
            reason=RevocationReason(reason).flag,
            invalidity_date=invalidity_date,
        )
        for serial, revoked_at, reason, invalidity_date in rows.iterator(chunk_size=10000)
    ]


def _carry_over(
    *, ca: CertificateAuthority, previous: CrlPublication, cutoff: dt.datetime
) -> tuple[list[x509.RevokedCertificate], list[pki_crl.CrlEntry]] | None:
    """The previous CRL's entries still due and the revocations it lacks; None to build from all rows.

    Reads the revocations since the previous CRL read its own (:data:`CARRY_OVER_SLACK` earlier) and
    the serials whose certificates passed ``cutoff`` since. None when the previous CRL cannot be
    carried over (:func:`ca.pki.crl.previous_crl`: another CA or key, damaged), when it dropped entries
    that are due again (a longer lifetime, a publication dated earlier), or when the result would not
    have exactly as many entries as there are revocations to list (a revocation dated long before the
    CRL that missed it): then every entry is built from the rows.
    """
    previous_cutoff = previous.this_update - (previous.next_update - previous.this_update)
    if cutoff < previous_cutoff:
        return None
    if _revoked_reservations(ca=ca, cutoff=previous_cutoff).exists():
        return None  # revoked reserved serials (a crash between signing and storing): rare, built in full
    if ca.children.filter(revoked_at__isnull=False).exists():
        return None  # a revoked issuing CA below this one: rare, built in full
    # Both reads filter on one indexed column only (revoked_at, not_after) and leave the CA to Python:
    # given the CA too, SQLite walks every certificate of the CA instead of the few rows in range.
    since = (
        Revocation.objects.filter(revoked_at__gte=previous.created_at - CARRY_OVER_SLACK)
        .order_by("revoked_at", "pk")
        .values_list(
            "certificate__ca_id", "certificate__not_after", "certificate__serial", "revoked_at", "reason",
            "invalidity_date",
        )
    )  # fmt: skip
    fresh = [
        pki_crl.CrlEntry(
            serial=int(serial, 16),
            revoked_at=revoked_at,
            reason=RevocationReason(reason).flag,
            invalidity_date=invalidity_date,
        )
        for ca_id, not_after, serial, revoked_at, reason, invalidity_date in since
        if ca_id == ca.pk and not_after > cutoff
    ]
    expired = (
        Certificate.objects.revoked()
        .filter(not_after__gt=previous_cutoff, not_after__lte=cutoff)
        .order_by()
        .values_list("ca_id", "serial")
    )
    dropped = {int(serial, 16) for ca_id, serial in expired if ca_id == ca.pk}
    der = CrlPublication.objects.filter(pk=previous.pk).values_list("der", flat=True).get()
    try:
        base = pki_crl.previous_crl(issuer=ca.certificate, previous_der=bytes(der))
    except pki_crl.PreviousCrlUnusable as exc:
        logger.warning("CRL #%s of CA %s is not carried over: %s", previous.number, ca.slug, exc)
        return None
    carried = base.entries
    # Only a revocation dated before the previous CRL read its entries can be on it (equal: frozen clocks).
    maybe_listed = [entry for entry in fresh if entry.revoked_at <= previous.created_at]
    if dropped or len(maybe_listed) > _SINGLE_LOOKUPS:
        serials = [revoked.serial_number for revoked in carried]
        if dropped:
            carried = [
                revoked for revoked, serial in zip(carried, serials, strict=True) if serial not in dropped
            ]
        on_previous = set(serials)
        new = [entry for entry in fresh if entry.serial not in on_previous]
    else:
        already = {entry.serial for entry in maybe_listed if base.lists(serial=entry.serial)}
        new = [entry for entry in fresh if entry.serial not in already]
    due = _revocations_listed(ca=ca, cutoff=cutoff).count()
    if len(carried) + len(new) != due:
        logger.warning(
            "CRL #%s of CA %s is not carried over: it would give %s entries for %s revocations",
            previous.number,
            ca.slug,
            len(carried) + len(new),
            due,
        )
        return None
    return carried, new


def _has_unpublished_revocations(publication: CrlPublication) -> bool:
    """A revocation recorded after the CRL read its entries (its own publication must have failed)."""
    if SerialReservation.objects.filter(
        ca_id=publication.ca_id, state=ReservationState.REVOKED, closed_at__gt=publication.created_at
    ).exists():
        return True
    if CertificateAuthority.objects.filter(
        parent_id=publication.ca_id, revoked_at__gt=publication.created_at
    ).exists():
        return True
    return Revocation.objects.filter(
        certificate__ca_id=publication.ca_id, revoked_at__gt=publication.created_at
    ).exists()


def current_crl(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> CrlPublication:
    """The CRL to serve: the newest one, re-signed first when it is half-way to nextUpdate.

    Never returns an expired CRL: if it cannot be re-signed in time, :class:`CAError` is raised.
    """
    now = now or utcnow()
    latest = CrlPublication.objects.filter(ca=ca).order_by("-number").first()
    if latest is not None and not is_stale(latest, now=now) and not _has_unpublished_revocations(latest):
        return latest
    try:
        return publish_crl(ca=ca, now=now, unless_newer_than=latest.number if latest else 0)
    except CAError:
        logger.exception("could not re-sign the CRL of CA %s", ca.slug)
        if latest is not None and latest.next_update > now:
            return latest
        raise
