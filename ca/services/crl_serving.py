"""Serving CRLs cheaply: per-process caches of the newest CRL's row and bytes (the public endpoint)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef

from ca.clock import utcnow
from ca.models import (
    CertificateAuthority,
    CrlPublication,
    Revocation,
)
from ca.pki.pem import pem_armor
from ca.services import crl

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServedCrl:
    """The CRL the public endpoint serves for one CA: its numbers and times and its bytes."""

    ca_id: int
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    sha256: str
    der: bytes
    pem: bytes


#: DER and PEM of recently served CRLs by publication id and SHA-256, per process (a stored CRL never
#: changes; the SHA-256 tells a row apart from a later one given the same id after a restore).
_CRL_BYTES: dict[tuple[int, str], tuple[bytes, bytes]] = {}
_CRL_BYTES_KEPT = 8
_CRL_BYTES_LOCK = threading.Lock()


def _crl_bytes(publication_id: int, sha256: str, der: bytes | None = None) -> tuple[bytes, bytes]:
    cached = _CRL_BYTES.get((publication_id, sha256))
    if cached is not None:
        return cached
    if der is None:
        der = bytes(CrlPublication.objects.filter(pk=publication_id).values_list("der", flat=True).get())
    cached = (der, pem_armor(der=der, label="X509 CRL"))
    with _CRL_BYTES_LOCK:  # threaded workers: one thread at a time drops the oldest
        while len(_CRL_BYTES) >= _CRL_BYTES_KEPT:
            _CRL_BYTES.pop(next(iter(_CRL_BYTES)))
        _CRL_BYTES[(publication_id, sha256)] = cached
    return cached


#: How long a process serves what it last read about a CA's newest CRL before reading it again. A
#: CRL signed by another process (or host) is served at most this much later; in this process at once.
CRL_RECHECK_SECONDS = 0.25
#: Per process, by CA slug: (monotonic time read, the newest CRL's row as :func:`_newest_crl_row` reads it).
_NEWEST_CRL: dict[str, tuple[float, tuple[Any, ...]]] = {}


def _newest_crl_row(slug: str) -> tuple[Any, ...] | None:
    """(id, CA id, number, thisUpdate, nextUpdate, SHA-256, a revocation is newer) of the newest CRL."""
    checked = _NEWEST_CRL.get(slug)
    if checked is not None and time.monotonic() - checked[0] < CRL_RECHECK_SECONDS:
        return checked[1]
    unpublished = Revocation.objects.filter(
        certificate__ca_id=OuterRef("ca_id"), revoked_at__gt=OuterRef("created_at")
    )
    row = (
        CrlPublication.objects.filter(ca__slug=slug)
        .order_by("-number")
        .values_list("pk", "ca_id", "number", "this_update", "next_update", "sha256", Exists(unpublished))
        .first()
    )
    if row is not None:
        _NEWEST_CRL[slug] = (time.monotonic(), row)
    return row


def forget_newest_crl(**_kwargs: object) -> None:
    """A revocation or CRL written in this process: the next download reads the newest CRL again."""
    _NEWEST_CRL.clear()


def crl_to_serve(*, slug: str, now: dt.datetime | None = None) -> ServedCrl | None:
    """What :func:`current_crl` returns for the CA ``slug``, in one small query when nothing is due.

    That query reads the newest CRL's numbers and times (not its DER) and whether a revocation is
    newer than it, at most every :data:`CRL_RECHECK_SECONDS` per process (at once after a revocation or
    CRL written in this process); the bytes come from a per-process cache. A CRL half-way to nextUpdate
    (checked on every download) or missing a revocation goes through :func:`current_crl` (re-signed,
    never expired). None: no CA ``slug``.
    Raises :class:`CAError` when the CRL is due and cannot be signed and the last one has expired.
    """
    now = now or utcnow()
    row = _newest_crl_row(slug)
    if row is not None:
        pk, ca_id, number, this_update, next_update, sha256, newer_revocation = row
        due = crl.past_half_time(this_update=this_update, next_update=next_update, now=now)
        if not newer_revocation and not due:
            der, pem = _crl_bytes(pk, sha256)
            return ServedCrl(ca_id, number, this_update, next_update, sha256, der, pem)
    ca = CertificateAuthority.objects.filter(slug=slug).first()
    if ca is None:
        return None
    publication = crl.current_crl(ca=ca, now=now)
    der, pem = _crl_bytes(publication.pk, publication.sha256, bytes(publication.der))
    return ServedCrl(
        ca.pk,
        publication.number,
        publication.this_update,
        publication.next_update,
        publication.sha256,
        der,
        pem,
    )


# --- propagation to front servers -------------------------------------------------------------------
