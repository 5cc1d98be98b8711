"""CA rollover: a new key generation for the same CA, without breaking what trusts the old one.

A key generation is a :class:`~ca.models.CertificateAuthority` row. :func:`rollover_ca` makes the next one:
the same name and subject, a new key (the same type unless asked otherwise; in a PKCS#11 token if asked),
a new certificate (new serial, new subject key identifier; a root signs its own, an intermediate's is
signed by its parent's newest generation), its own slug (``<first slug>-<n>``, so its own CRL and CA
certificate URLs), and the two link certificates of RFC 4210 section 4.4 between the old key and the new
one (:mod:`ca.pki.rollover`), each signed through the key backend of the generation that signs it.

From then on the new generation issues (it becomes the default if the old one was, and
:meth:`CertificateAuthority.newest_generation` is what issuance, EST and SCEP use); the old one never issues
again, but its certificates keep pointing at its own CRL, which it keeps signing (republish, revocations,
OCSP answers by issuer key hash) until its last certificate expires. Front servers that carried the old
generation's CRL are told to carry the new one's too (their health then shows whether they picked it up).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.db import IntegrityError

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import AuditEvent, CertificateAuthority, ReservationState, SerialReservation
from ca.pki import keys as pki_keys
from ca.pki import pkcs11 as pki_pkcs11
from ca.pki import signing as pki_signing
from ca.pki.rollover import CRL_LINE, comment, link_certificate_builder
from ca.pki.serials import format_serial, new_serial
from ca.services import keys, reservations
from ca.services.authorities import (
    RESERVED_SLUGS,
    Lineage,
    TokenPlacement,
    remove_new_token_key,
    sign_and_save,
    token_label,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rollover:
    """What a rollover made: the new generation (stored) beside the old, and the two link certificates."""

    old: CertificateAuthority
    new: CertificateAuthority
    old_signs_new: x509.Certificate
    new_signs_old: x509.Certificate


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated upper-case hex (as ``openssl x509 -fingerprint -sha256``)."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def next_slug(ca: CertificateAuthority) -> str:
    """``<slug of the first generation>-<n>`` for generation n, or the next free number."""
    generations = ca.generations()
    base = generations[0].slug[:60]
    number = len(generations) + 1
    while True:
        slug = f"{base}-{number}"
        if slug not in RESERVED_SLUGS and not CertificateAuthority.objects.filter(slug=slug).exists():
            return slug
        number += 1


def _refusal(ca: CertificateAuthority, *, now: dt.datetime) -> str | None:
    newest = ca.newest_generation()
    if newest.pk != ca.pk:
        return (
            f"CA '{ca.slug}' was rolled over already: its newest key generation is '{newest.slug}'. "
            f"Roll that one over instead (manage.py rollover_ca {newest.slug})."
        )
    if (revoked := ca.revoked_in_chain()) is not None:
        return (
            f"CA '{ca.slug}' cannot be rolled over: '{revoked.slug}' in its chain is revoked, so nothing may "
            "trust a link from it. Make a new CA with manage.py init_ca instead."
        )
    if ca.not_after <= now:
        return (
            f"CA '{ca.slug}' expired on {ca.not_after:%Y-%m-%d}: its key can no longer sign the link to a "
            "new key. Make a new CA with manage.py init_ca and give front servers its certificate."
        )
    return None


def _default_days(ca: CertificateAuthority) -> int:
    return max(1, min(36500, round((ca.not_after - ca.not_before) / dt.timedelta(days=1))))


def rollover_ca(
    *,
    ca: CertificateAuthority,
    key_type: pki_keys.CAKeyType | None = None,
    days: int | None = None,
    token: TokenPlacement | None = None,
    slug: str | None = None,
    now: dt.datetime | None = None,
) -> Rollover:
    """Make the next key generation of ``ca`` (see the module's docstring); raises :class:`CAError` with
    what to do when ``ca`` cannot be rolled over (not its newest generation, revoked, expired)."""
    now = now or utcnow()
    ca = CertificateAuthority.objects.select_related("parent").get(pk=ca.pk)
    if (problem := _refusal(ca, now=now)) is not None:
        raise CAError(problem)
    if key_type is None:
        try:
            key_type = pki_keys.CAKeyType(ca.key_type)
        except ValueError:
            raise CAError(
                f"The key type of CA '{ca.slug}' ({ca.key_type}) cannot be generated here; choose one with "
                f"--key-type ({', '.join(t.value for t in pki_keys.CAKeyType)})."
            ) from None
    days = days if days is not None else _default_days(ca)
    slug = slug or next_slug(ca)
    if slug in RESERVED_SLUGS or CertificateAuthority.objects.filter(slug=slug).exists():
        raise CAError(f"The slug '{slug}' is taken; choose another --slug.")
    parent = ca.parent.newest_generation() if ca.parent is not None else None
    if parent is not None and (revoked := parent.revoked_in_chain()) is not None:
        raise CAError(f"The parent '{revoked.slug}' of CA '{ca.slug}' is revoked; it cannot sign a new key.")
    old_certificate = ca.certificate
    key: pki_keys.CAPrivateKey | pki_pkcs11.Pkcs11KeyBackend
    with from_core():
        if token is None:
            key = pki_keys.generate_ca_key(key_type=key_type)
            own: pki_signing.KeyBackend = pki_signing.PrivateKeyBackend(key=key)
        else:
            where = token.key(label=token_label(slug), key_id=pki_pkcs11.new_key_id())
            key = own = pki_pkcs11.generate_key(where=where, pin=token.pin, key_type=key_type)
    made: dict[str, x509.Certificate] = {}

    def links(certificate: x509.Certificate) -> Lineage:
        """Both link certificates, once the new generation's certificate is signed (outside a transaction:
        the old generation's serial is reserved and committed first, as for any certificate it signs)."""
        not_after = min(certificate.not_valid_after_utc, old_certificate.not_valid_after_utc)
        (reservation,) = reservations.reserve(
            ca=ca, purposes=[f"link certificate to {slug}"], not_after=not_after, now=now
        )
        with from_core():
            old_signs_new = pki_signing.sign_certificate(
                builder=link_certificate_builder(
                    certified=certificate,
                    signer=old_certificate,
                    serial=int(reservation.serial, 16),
                    now=now,
                    signer_urls=ca.urls,
                ),
                backend=keys.key_backend(ca),
            )
            # the new generation has no row yet to reserve on: its first serial is recorded with the row
            new_serial_number = new_serial()
            new_signs_old = pki_signing.sign_certificate(
                builder=link_certificate_builder(
                    certified=old_certificate,
                    signer=certificate,
                    serial=new_serial_number,
                    now=now,
                    signer_urls=CertificateAuthority(slug=slug).urls,
                ),
                backend=own,
            )
        made.update(old_signs_new=old_signs_new, new_signs_old=new_signs_old)

        def record(new: CertificateAuthority) -> None:
            SerialReservation.objects.create(
                ca=new,
                serial=format_serial(serial=new_serial_number),
                purpose=f"link certificate to {ca.slug}",
                not_after=new_signs_old.not_valid_after_utc,
                reserved_at=now,
                state=ReservationState.ISSUED,
                closed_at=now,
            )
            reservations.mark_issued(reservations=[reservation], now=now)
            for front_server in ca.front_servers.all():
                front_server.cas.add(new)
            audit.record(
                event=AuditEvent.CA_ROLLED_OVER,
                ca_slug=new.slug,
                serial=new.serial,
                detail=(
                    f"new key generation of {ca.slug} ({new.key_type}"
                    + (", key in PKCS#11 token" if new.key_in_token else "")
                    + f"); old-signs-new link serial {reservation.serial}, new-signs-old link serial "
                    f"{format_serial(serial=new_serial_number)}; {ca.slug} issues no more"
                ),
                now=now,
            )

        der = serialization.Encoding.DER
        return Lineage(
            previous=ca, links=(old_signs_new.public_bytes(der), new_signs_old.public_bytes(der)), also=record
        )

    try:
        new, parent_reservation = sign_and_save(
            name=ca.name,
            slug=slug,
            key=key,
            own=own,
            key_type=str(key_type),
            days=days,
            parent=parent,
            make_default=ca.is_default,
            now=now,
            subject=old_certificate.subject,
            lineage=links,
        )
    except BaseException as exc:
        remove_new_token_key(key=key, token=token, what="a rollover that failed")
        if isinstance(exc, IntegrityError):  # another rollover of this CA (or this slug) won the race
            raise CAError(
                f"CA '{ca.slug}' was rolled over by another command at the same time, or the slug '{slug}' "
                f"was taken meanwhile, so nothing was saved. Run manage.py rollover_ca {ca.slug} again: it "
                "says which generation is the newest, if another one was made."
            ) from None
        raise
    if parent_reservation is not None:
        reservations.mark_issued(reservations=[parent_reservation], now=now)
    logger.warning("CA %s rolled over to a new key generation %s", ca.slug, new.slug)
    return Rollover(
        old=CertificateAuthority.objects.get(pk=ca.pk),
        new=new,
        old_signs_new=made["old_signs_new"],
        new_signs_old=made["new_signs_old"],
    )


# --- the CA bundle front servers fetch ------------------------------------------------------------------


def bundle_authorities(ca: CertificateAuthority) -> list[CertificateAuthority]:
    """Every key generation of ``ca`` and of the CAs above any of them, roots first, oldest first."""
    found: dict[int, tuple[int, CertificateAuthority]] = {}
    frontier = [ca]
    while frontier:
        node = frontier.pop()
        for generation in node.generations():
            if generation.pk in found:
                continue
            found[generation.pk] = (len(generation.chain()), generation)
            if generation.parent is not None:
                frontier.append(generation.parent)
    return [
        row for _, row in sorted(found.values(), key=lambda item: (item[0], item[1].created_at, item[1].pk))
    ]


def _pem_block(certificate: x509.Certificate, *comments: str) -> str:
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    lines = (comment(line if line.startswith("#") else f"# {line}") for line in comments)
    return "".join(f"{line}\n" for line in lines) + pem


def ca_bundle(
    ca: CertificateAuthority,
    *,
    now: dt.datetime | None = None,
    authorities: list[CertificateAuthority] | None = None,
) -> bytes:
    """The PEM bundle of the CA certificates a front server trusts for ``ca``: every key generation still
    valid (not expired, not revoked) of it and of the CAs above it, each after a comment line with its CRL
    URL (:data:`CRL_LINE`), and the link certificates between generations. Text outside the PEM blocks is
    ignored by OpenSSL, nginx, Apache and Node (RFC 7468 section 5.2). ``authorities``: what
    :func:`bundle_authorities` gave for ``ca``, where the caller has it already."""
    now = now or utcnow()
    parts = [
        f"# The CA certificates of {comment(ca.name)} ({ca.slug}) and the CAs above it: every key\n"
        "# generation still valid, and the link certificates between generations (RFC 4210 section 4.4).\n"
        "# enroll-crl-sync --ca-bundle-url adds to its --ca-file only those that chain to a CA it trusts\n"
        "# already.\n"
    ]
    for generation in authorities if authorities is not None else bundle_authorities(ca):
        if generation.not_after <= now or generation.revoked_in_chain() is not None:
            continue
        certificate = generation.certificate
        parts.append(
            _pem_block(
                certificate,
                f"{generation.subject}, key generation {generation.slug}, valid until "
                f"{generation.not_after:%Y-%m-%d}, SHA-256 {fingerprint(certificate)}",
                CRL_LINE + generation.public_url("ca:crl-pem"),
            )
        )
        previous = generation.previous
        if previous is None or previous.not_after <= now:
            continue
        for link, what in zip(
            generation.link_certificates,
            (
                f"the key of {generation.slug} certified by {previous.slug}",
                f"the key of {previous.slug} certified by {generation.slug}",
            ),
            strict=True,
        ):
            if link.not_valid_after_utc > now:
                parts.append(_pem_block(link, f"Link certificate: {what}, SHA-256 {fingerprint(link)}"))
    return "\n".join(parts).encode("ascii")
