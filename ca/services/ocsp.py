"""OCSP answers (RFC 6960) from the database, for every CA the portal hosts, at one URL.

The responder picks the CA by the request's CertID (issuerNameHash and issuerKeyHash, RFC 6960 4.1.1, with
whatever hash the client used), so one URL serves the whole chain: nginx's ``ssl_ocsp_responder`` sends every
certificate of the chain, the issuing CA's included, to the one URL it is given. A CertID naming a CA the
portal does not host gets ``unauthorized`` (2.3); a serial the CA never issued, ``unknown`` (2.2).

A CA answers for what it signed: its client certificates, serials reserved and revoked before they were
stored, and the CAs below it (an issuing CA's certificate is one its parent signed).

Answers are signed once and reused while the status stays the same and less than half of the response's
lifetime has passed (the cache key holds the status, so a revocation is answered at once); requests with a
nonce are signed afresh, since the nonce must be echoed (4.4.1).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.conf import settings
from django.db import models

from ca.clock import utcnow
from ca.errors import from_core
from ca.models import (
    Certificate,
    CertificateAuthority,
    ReservationState,
    RevocationReason,
    SerialReservation,
)
from ca.pki import ocsp as pki_ocsp
from ca.pki import signing as pki_signing
from ca.pki.ocsp import CertificateState, OcspAnswer, OcspQuestion
from ca.pki.serials import format_serial
from ca.services import keys

logger = logging.getLogger(__name__)

#: Signed answers kept per process (about 2 KB each at most).
ANSWER_CACHE_SIZE = 20_000


def validity() -> dt.timedelta:
    """nextUpdate - thisUpdate of every answer (``ENROLL_OCSP_VALIDITY_SECONDS``)."""
    return dt.timedelta(seconds=settings.ENROLL_OCSP_VALIDITY_SECONDS)


def ocsp_response(
    *, request_der: bytes, ca: CertificateAuthority | None = None, now: dt.datetime | None = None
) -> OcspAnswer:
    """Answer a DER OCSP request from the database (a revocation counts from its commit).

    The CA is the one the CertID names, among all the portal hosts; ``ca`` (the CA of a per-CA URL) is only
    tried first. Never raises for anything a client sends.
    """
    now = now or utcnow()
    question = pki_ocsp.read_request(request_der=request_der)
    if isinstance(question, OcspAnswer):
        return question
    issuer = find_issuer(question=question, hint=ca)
    if issuer is None:
        return pki_ocsp.unauthorized()
    state = certificate_state(ca=issuer, serial=question.serial)
    if question.nonce is None:
        cached = _cache.get(issuer=issuer, question=question, state=state, now=now)
        if cached is not None:
            return cached
    with from_core():
        backend = keys.key_backend(issuer)
        pki_signing.certified_public_key(backend=backend, certificate=issuer.certificate)
        answer = pki_ocsp.answer(
            question=question,
            issuer=issuer.certificate,
            backend=backend,
            state=state,
            now=now,
            validity=validity(),
        )
    if question.nonce is None:
        _cache.put(issuer=issuer, question=question, state=state, answer=answer)
    return answer


# --- which CA -----------------------------------------------------------------------------------------


def find_issuer(
    *, question: OcspQuestion, hint: CertificateAuthority | None = None
) -> CertificateAuthority | None:
    """The hosted CA the CertID names (``hint`` first), or None."""
    if hint is not None and question.asks_about(hint.certificate):
        return hint
    hashes_key = (question.algorithm.name, question.issuer_name_hash, question.issuer_key_hash)
    for ca in CertificateAuthority.objects.order_by("created_at", "pk"):
        if ca.pk != getattr(hint, "pk", None) and _hashes(ca, question.algorithm) == hashes_key:
            return ca
    return None


_hash_cache: dict[tuple[int, str, str], tuple[str, bytes, bytes]] = {}
_hash_lock = threading.Lock()


def _hashes(ca: CertificateAuthority, algorithm: hashes.HashAlgorithm) -> tuple[str, bytes, bytes]:
    key = (ca.pk, ca.fingerprint_sha256, algorithm.name)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is None:
        name_hash, key_hash = pki_ocsp.issuer_hashes(issuer=ca.certificate, algorithm=algorithm)
        cached = (algorithm.name, name_hash, key_hash)
        with _hash_lock:
            _hash_cache[key] = cached
    return cached


# --- what the CA knows about a serial ------------------------------------------------------------------


def certificate_state(*, ca: CertificateAuthority, serial: int) -> CertificateState | None:
    """Good, revoked (when, why) or None (never issued by ``ca``: ``unknown``)."""
    if serial <= 0 or serial.bit_length() > 160:
        return None
    text = format_serial(serial=serial)
    row = (
        Certificate.objects.issued()
        .filter(ca=ca, serial=text)
        .values_list("revocation__revoked_at", "revocation__reason")
        .first()
    )
    if row is not None:
        revoked_at, reason = row
        flag = RevocationReason(reason).flag if reason else None
        return CertificateState(revoked_at=revoked_at, reason=flag)
    child = _child_ca_state(ca=ca, serial=text)
    if child is not None:
        return child
    if _is_link_serial(ca=ca, serial=serial):
        return CertificateState()
    return _reserved_serial_state(ca=ca, serial=text)


def _is_link_serial(*, ca: CertificateAuthority, serial: int) -> bool:
    """Whether ``ca`` signed a link certificate with this serial at a rollover (ca.services.rollover):
    new-signs-old on its own row, old-signs-new on its successor's."""
    rows = CertificateAuthority.objects.filter(models.Q(pk=ca.pk) | models.Q(previous=ca))
    for pk, to_previous, from_previous in rows.values_list(
        "pk", "link_to_previous_der", "link_from_previous_der"
    ):
        der = to_previous if pk == ca.pk else from_previous
        if der and x509.load_der_x509_certificate(bytes(der)).serial_number == serial:
            return True
    return False


def _child_ca_state(*, ca: CertificateAuthority, serial: str) -> CertificateState | None:
    """A CA that ``ca`` signed (an issuing CA below a root) is a certificate of ``ca`` too: good, or
    revoked by ``manage.py revoke_ca``."""
    row = (
        CertificateAuthority.objects.filter(parent=ca, serial=serial)
        .values_list("revoked_at", "revocation_reason")
        .first()
    )
    if row is None:
        return None
    revoked_at, reason = row
    if revoked_at is None:
        return CertificateState()
    return CertificateState(revoked_at=revoked_at, reason=RevocationReason(reason or "unspecified").flag)


def _reserved_serial_state(*, ca: CertificateAuthority, serial: str) -> CertificateState | None:
    """A serial reserved, never stored and revoked by serial is "revoked" (it is on the CRL too); any
    other serial with no certificate is "unknown" (RFC 6960 2.2)."""
    row = (
        SerialReservation.objects.filter(ca=ca, serial=serial, state=ReservationState.REVOKED)
        .values_list("closed_at", "revocation_reason")
        .first()
    )
    if row is None:
        return None
    revoked_at, reason = row
    return CertificateState(revoked_at=revoked_at, reason=RevocationReason(reason or "unspecified").flag)


# --- signed answers, reused -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    ca: int
    fingerprint: str
    algorithm: str
    serial: int
    revoked_at: dt.datetime | None
    reason: x509.ReasonFlags | None
    known: bool


class _AnswerCache:
    """Signed answers by CA, CertID hash, serial and status; reused until half of their lifetime."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[_Key, OcspAnswer] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(issuer: CertificateAuthority, question: OcspQuestion, state: CertificateState | None) -> _Key:
        return _Key(
            issuer.pk,
            issuer.fingerprint_sha256,
            question.algorithm.name,
            question.serial,
            state.revoked_at if state else None,
            state.reason if state else None,
            state is not None,
        )

    def get(
        self,
        *,
        issuer: CertificateAuthority,
        question: OcspQuestion,
        state: CertificateState | None,
        now: dt.datetime,
    ) -> OcspAnswer | None:
        key = self._key(issuer, question, state)
        with self._lock:
            answer = self._entries.get(key)
        if answer is None or answer.this_update is None or answer.next_update is None:
            return None
        half = answer.this_update + (answer.next_update - answer.this_update) / 2
        if not answer.this_update <= now < half:
            return None
        return answer

    def put(
        self,
        *,
        issuer: CertificateAuthority,
        question: OcspQuestion,
        state: CertificateState | None,
        answer: OcspAnswer,
    ) -> None:
        key = self._key(issuer, question, state)
        with self._lock:
            self._entries[key] = answer
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _AnswerCache(ANSWER_CACHE_SIZE)


def clear_caches() -> None:
    """Forget reused answers and issuer hashes (tests; after a CA key changes)."""
    _cache.clear()
    with _hash_lock:
        _hash_cache.clear()
