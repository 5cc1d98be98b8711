"""OCSP answers (RFC 6960) from the database, signed by the CA's key."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings

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
from ca.pki.ocsp import CertificateState, OcspAnswer
from ca.pki.serials import format_serial
from ca.services import keys

logger = logging.getLogger(__name__)


def ocsp_response(
    *, ca: CertificateAuthority, request_der: bytes, now: dt.datetime | None = None
) -> OcspAnswer:
    """Answer an OCSP request for ``ca`` from the database (a revocation counts from its commit)."""
    now = now or utcnow()

    def lookup(serial: int) -> CertificateState | None:
        if serial <= 0 or serial.bit_length() > 160:
            return None
        row = (
            Certificate.objects.issued()
            .filter(ca=ca, serial=format_serial(serial=serial))
            .values_list("revocation__revoked_at", "revocation__reason")
            .first()
        )
        if row is None:
            return _reserved_serial_state(ca=ca, serial=format_serial(serial=serial))
        revoked_at, reason = row
        return CertificateState(
            revoked_at=revoked_at, reason=RevocationReason(reason).flag if reason else None
        )

    with from_core():
        key = keys.load_key(ca)
    return pki_ocsp.respond(
        request_der=request_der,
        issuer=ca.certificate,
        issuer_key=key,
        lookup=lookup,
        now=now,
        validity=dt.timedelta(seconds=settings.ENROLL_OCSP_VALIDITY_SECONDS),
    )


# --- exporting -------------------------------------------------------------------------------------


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
