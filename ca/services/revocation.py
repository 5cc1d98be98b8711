"""Revoking certificates: find one by serial, record the revocation, block a compromised key; revoking an
issuing CA."""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction

from ca import audit
from ca.clock import utcnow
from ca.errors import AlreadyRevoked, CAError, CrlNotPublished
from ca.models import (
    AuditEvent,
    BlockedKey,
    BlockedKeySource,
    Certificate,
    CertificateAuthority,
    ReservationState,
    Revocation,
    RevocationReason,
    SerialReservation,
)
from ca.pki.serials import format_serial, parse_serial
from ca.services import crl
from ca.signals import ca_revoked, certificates_revoked
from ca.types import Account

logger = logging.getLogger(__name__)


def find_certificate(*, serial: str, ca: CertificateAuthority | None = None) -> Certificate:
    """Look a certificate up by serial (hex, colons optional, any case)."""
    try:
        canonical = format_serial(serial=parse_serial(text=serial))
    except ValueError as exc:
        raise CAError(str(exc)) from None
    matches = Certificate.objects.issued().filter(serial=canonical)
    if ca is not None:
        matches = matches.filter(ca=ca)
    found = list(matches.select_related("ca")[:2])
    if not found:
        raise CAError(f"No certificate with serial {canonical} was issued here.")
    if len(found) > 1:
        raise CAError(f"Several CAs issued serial {canonical}; name the CA with --ca.")
    return found[0]


def key_siblings(certificate: Certificate, *, now: dt.datetime | None = None) -> list[Certificate]:
    """The other unexpired, unrevoked certificates on the same public key, on any CA of the portal.

    A revocation of ``certificate`` for key compromise revokes them too (:func:`revoke_certificate`): a
    compromised key is never trusted again. Pages list them before the person confirms.
    """
    return list(
        Certificate.objects.of_keys([certificate.spki_sha256])
        .filter(not_after__gt=now or utcnow(), revocation__isnull=True)
        .exclude(pk=certificate.pk)
        .select_related("ca", "owner")
        .order_by("ca_id", "not_after")
    )


def revoke_certificate(
    *,
    certificate: Certificate,
    reason: RevocationReason,
    by: Account | None = None,
    invalidity_date: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Revocation:
    """Record a revocation and publish a new CRL as soon as the revocation is committed.

    For key compromise (RFC 5280 5.3.1 keyCompromise) the same transaction also revokes every other
    unexpired certificate on the same public key (:func:`key_siblings`), on every CA, with the same
    reason and invalidity date, blocks the key for good, and audits each revocation; each affected CA's
    CRL is then published once, and ``ca.signals.certificates_revoked`` tells the apps above.

    The rows of every affected CA are locked (in id order, as publish_crl does) before the revocation
    time is taken, so every CRL either was read before this revocation's time (current_crl() then sees it
    as unpublished) or after its commit (and lists it): a revocation cannot fall between two CRLs
    unnoticed.
    """
    if invalidity_date is not None and invalidity_date > (now or utcnow()):
        raise CAError("The invalidity date cannot be in the future.")
    compromised = reason == RevocationReason.KEY_COMPROMISE
    with transaction.atomic():
        ca_ids = {certificate.ca_id}
        if compromised:
            ca_ids.update(sibling.ca_id for sibling in key_siblings(certificate, now=now))
        # NO KEY UPDATE: serialises revocations and publications of these CAs, yet does not block the
        # FOR KEY SHARE that PostgreSQL's deferred foreign-key checks take on the row at another
        # transaction's commit (an approval inserting certificates while holding the audit lock).
        list(CertificateAuthority.objects.select_for_update(no_key=True).filter(pk__in=ca_ids).order_by("pk"))
        now = now or utcnow()
        locked = (
            Certificate.objects.select_for_update(of=("self",))
            .select_related("ca", "owner")
            .get(pk=certificate.pk)
        )
        if Revocation.objects.filter(certificate=locked).exists():
            raise AlreadyRevoked(f"Certificate {locked.serial} is revoked already.")
        targets = [locked]
        if compromised:
            # read again under the locks: a certificate issued meanwhile on another CA is covered too
            siblings = key_siblings(locked, now=now)
            if more := sorted({s.ca_id for s in siblings} - ca_ids):
                list(
                    CertificateAuthority.objects.select_for_update(no_key=True)
                    .filter(pk__in=more)
                    .order_by("pk")
                )
                siblings = key_siblings(locked, now=now)  # as they are now that those CAs are locked too
            list(
                Certificate.objects.select_for_update().filter(pk__in=[s.pk for s in siblings]).order_by("pk")
            )
            targets += siblings
        revocations = [
            Revocation.objects.create(
                certificate=target,
                reason=reason,
                revoked_at=now,
                invalidity_date=invalidity_date,
                revoked_by=by,
            )
            for target in targets
        ]
        if compromised:
            block_key_of(locked, now=now)
        audit.record_many(
            [
                audit.AuditItem(
                    event=AuditEvent.CERTIFICATE_REVOKED,
                    actor=by,
                    subject_user=target.owner,
                    ca_slug=target.ca.slug,
                    serial=target.serial,
                    detail=str(reason) if target is locked else f"{reason}: same key as {locked.serial}",
                )
                for target in targets
            ],
            now=now,
        )
        for ca in sorted({target.ca for target in targets}, key=lambda ca: ca.pk):
            serials = [target.serial for target in targets if target.ca_id == ca.pk]
            _publish_on_commit(
                ca=ca, what=f"Certificate{'s' if len(serials) > 1 else ''} {', '.join(serials)}", by=by
            )
        if compromised:
            transaction.on_commit(
                lambda: certificates_revoked.send(sender=Revocation, revocations=revocations, by=by),
                robust=True,
            )
    logger.info(
        "revoked serial %s on CA %s (%s)%s",
        locked.serial,
        locked.ca.slug,
        reason,
        f" and {len(targets) - 1} other certificate(s) on the same key" if len(targets) > 1 else "",
    )
    return revocations[0]


def _publish_on_commit(*, ca: CertificateAuthority, what: str, by: Account | None) -> None:
    """Sign a new CRL of ``ca`` once the revocation commits, audited as the act of ``by`` (the account that
    revoked; None for the command line).

    Not robust on purpose: if signing the new CRL fails, the caller must hear it (the revocation itself is
    committed; current_crl() also re-signs when it sees a revocation newer than the CRL).
    """

    def publish_after_commit() -> None:
        try:
            crl.publish_crl(ca=ca, by=by)
        except CAError as exc:
            raise CrlNotPublished(
                f"{what} is revoked, but the new CRL could not be signed: {exc} "
                "Fix that and run manage.py publish_crl."
            ) from exc

    transaction.on_commit(publish_after_commit)


def block_key_of(certificate: Certificate, *, now: dt.datetime) -> BlockedKey | None:
    """Block the key of ``certificate`` (revoked for key compromise) for every future request and issuance.

    Runs in the revocation's transaction; a key blocked already stays as it was (its first cause kept).
    """
    if not certificate.spki_sha256:
        return None
    blocked, _created = BlockedKey.objects.get_or_create(
        spki_sha256=certificate.spki_sha256,
        defaults={
            "source": BlockedKeySource.KEY_COMPROMISE,
            "certificate": certificate,
            "detail": f"revoked for key compromise: serial {certificate.serial}, CA {certificate.ca.slug}",
            "created_at": now,
        },
    )
    return blocked


def revoke_serial(
    *,
    serial: str,
    reason: RevocationReason,
    ca: CertificateAuthority | None = None,
    by: Account | None = None,
    now: dt.datetime | None = None,
) -> SerialReservation:
    """Revoke a serial that was reserved and never stored (its certificate may have been signed).

    A process that died between signing and storing leaves such a reservation
    (:func:`ca.services.reservations.unstored`). The serial goes on the CA's CRL, published on commit,
    until the notAfter the certificate would have had. Raises :class:`CAError` when no such serial was
    reserved, or it was issued (revoke the certificate), discarded (nothing was signed) or revoked already.
    """
    try:
        canonical = format_serial(serial=parse_serial(text=serial))
    except ValueError as exc:
        raise CAError(str(exc)) from None
    with transaction.atomic():
        found = SerialReservation.objects.filter(serial=canonical)
        if ca is not None:
            found = found.filter(ca=ca)
        matches = list(found.select_for_update().select_related("ca")[:2])
        if not matches:
            raise CAError(f"No certificate with serial {canonical} was issued or reserved here.")
        if len(matches) > 1:
            raise CAError(f"Several CAs reserved serial {canonical}; name the CA with --ca.")
        (reservation,) = matches
        if reservation.state == ReservationState.REVOKED:
            raise AlreadyRevoked(f"Serial {canonical} is revoked already.")
        if reservation.state != ReservationState.RESERVED:
            raise CAError(
                f"Serial {canonical} was {reservation.get_state_display().lower()} "
                f"({reservation.note or 'its certificate is stored'}); only a reserved serial that was never "
                "stored is revoked this way."
            )
        CertificateAuthority.objects.select_for_update(no_key=True).only("pk").get(pk=reservation.ca_id)
        now = now or utcnow()
        reservation.state = ReservationState.REVOKED
        reservation.closed_at = now
        reservation.revocation_reason = reason
        reservation.revoked_by = by
        reservation.note = f"revoked by serial: {reason.label.lower()}"
        reservation.save(update_fields=["state", "closed_at", "revocation_reason", "revoked_by", "note"])
        audit.record(
            event=AuditEvent.CERTIFICATE_REVOKED,
            actor=by,
            ca_slug=reservation.ca.slug,
            serial=canonical,
            detail=f"{reason}; a reserved serial with no stored certificate ({reservation.purpose})",
            now=now,
        )
        _publish_on_commit(ca=reservation.ca, what=f"Serial {canonical}", by=by)
    logger.info("revoked reserved serial %s on CA %s (%s)", canonical, reservation.ca.slug, reason)
    return reservation


def revoke_ca(
    *,
    ca: CertificateAuthority,
    reason: RevocationReason,
    by: Account | None = None,
    by_name: str = "",
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Revoke an issuing CA: its parent's CRL lists its serial and its parent's OCSP answers ``revoked``.

    An issuing CA's certificate is one its parent signed (RFC 5280 6.1.3 (a)(2): a path is checked for
    revocation at every level), so front servers that check the chain (nginx ``ssl_crl`` with a CRL per
    CA, Apache ``SSLCARevocationCheck chain``, nginx ``ssl_ocsp on``) refuse every certificate below it.
    The CA stops issuing (:func:`ca.services.issuance.reserve` refuses a CA revoked in its chain); its own
    CRL and OCSP keep answering for what it issued. Audited; the parent's CRL is published on commit;
    ``ca.signals.ca_revoked`` then tells the apps above, which tell the owners. A root has no parent to
    revoke it: it is removed from the trust stores instead.
    """
    if ca.parent_id is None:
        raise CAError(
            f"CA '{ca.slug}' is a root: no CA above it can revoke it. Remove it from the trust stores (the "
            "CA bundles of the front servers) instead."
        )
    with transaction.atomic():
        rows = {
            row.pk: row
            for row in CertificateAuthority.objects.select_for_update(no_key=True)
            .filter(pk__in=[ca.pk, ca.parent_id])
            .order_by("pk")
        }
        parent, locked = rows[ca.parent_id], rows[ca.pk]
        now = now or utcnow()
        if locked.revoked_at is not None:
            raise AlreadyRevoked(
                f"CA '{locked.slug}' was revoked already, on {locked.revoked_at:%Y-%m-%d %H:%M} UTC."
            )
        locked.revoked_at = now
        locked.revocation_reason = reason
        locked.revoked_by = by.get_username() if by is not None else (by_name or "command line")
        locked.save(update_fields=["revoked_at", "revocation_reason", "revoked_by"])
        audit.record(
            event=AuditEvent.CA_REVOKED,
            actor=by,
            ca_slug=parent.slug,
            serial=locked.serial,
            detail=f"{locked.slug} ({locked.subject}): {reason}; by {locked.revoked_by}",
            now=now,
        )
        _publish_on_commit(ca=parent, what=f"CA {locked.slug}", by=by)
        transaction.on_commit(
            lambda: ca_revoked.send(sender=CertificateAuthority, ca=locked, by=by), robust=True
        )
    logger.warning("revoked CA %s (%s) on the CRL of %s", locked.slug, reason, parent.slug)
    return locked
