"""Serial reservations: committed before signing; a crash between signing and storing stays visible."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.contrib.auth.models import User
from django.core import checks
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.errors import CAError
from ca.models import Certificate, CertificateAuthority, ReservationState, RevocationReason, SerialReservation
from ca.pki.serials import format_serial
from ca.services import issuance, reservations
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.ocsp import ocsp_response
from ca.services.reservations import UNSTORED_AFTER
from ca.services.revocation import revoke_serial
from enroll import flows
from enroll.models import RequestStatus
from tests.conftest import make_csr


class ProcessDied(BaseException):
    """Stands for the process being killed: nothing in the portal catches it."""


@pytest.fixture
def crash_after_signing(monkeypatch: pytest.MonkeyPatch) -> list[x509.Certificate]:
    """The next certificate is signed by the CA key, then the process 'dies' before it is stored."""
    signed: list[x509.Certificate] = []
    sign = issuance.finish_certificate  # type: ignore[attr-defined]

    def sign_then_die(**kwargs: Any) -> x509.Certificate:
        signed.append(sign(**kwargs))
        raise ProcessDied

    monkeypatch.setattr(issuance, "finish_certificate", sign_then_die)
    return signed


def unstored_warnings() -> list[checks.CheckMessage]:
    return [message for message in checks.run_checks() if message.id == "ca.W002"]


@pytest.mark.django_db(transaction=True)
def test_a_crash_between_signing_and_storing_is_reported_and_the_serial_can_be_revoked(
    ca: CertificateAuthority,
    alice: User,
    admin_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    crash_after_signing: list[x509.Certificate],
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    an_hour_ago = utcnow() - dt.timedelta(hours=1)

    with pytest.raises(ProcessDied):
        flows.approve(request_id=request.pk, now=an_hour_ago)
    monkeypatch.undo()

    (lost,) = crash_after_signing
    serial = format_serial(serial=lost.serial_number)
    request.refresh_from_db()
    assert request.status == RequestStatus.SUBMITTED  # the step rolled back: it can be approved again
    assert not Certificate.objects.exists()
    assert SerialReservation.objects.get(serial=serial).state == ReservationState.RESERVED

    (warning,) = unstored_warnings()
    assert serial in warning.msg
    assert f"request #{request.pk}" in warning.msg
    screen = admin_client.get(reverse("admin:ca-revocation"))
    assert serial in screen.content.decode()

    out = StringIO()
    call_command("revoke", serial.lower(), "--reason", "superseded", stdout=out)

    assert out.getvalue().startswith(f"revoked reserved serial {serial}")
    crl = x509.load_der_x509_crl(bytes(current_crl(ca=ca).der))
    entry = crl.get_revoked_certificate_by_serial_number(lost.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.superseded
    )
    assert unstored_warnings() == []
    ocsp_request = ocsp.OCSPRequestBuilder().add_certificate(lost, ca.certificate, hashes.SHA1()).build()  # noqa: S303
    answer = ocsp_response(ca=ca, request_der=ocsp_request.public_bytes(serialization.Encoding.DER))
    assert answer.status == "revoked"
    again = flows.approve(request_id=request.pk)
    assert again.status == RequestStatus.ISSUED
    assert again.certificate is not None
    assert again.certificate.serial != serial


def test_a_reservation_in_flight_is_not_reported(ca: CertificateAuthority) -> None:
    now = utcnow()
    reservations.reserve(ca=ca, purposes=["request #1"], not_after=now + dt.timedelta(days=1), now=now)

    assert not reservations.unstored(now=now + UNSTORED_AFTER - dt.timedelta(seconds=1)).exists()
    assert reservations.unstored(now=now + UNSTORED_AFTER + dt.timedelta(seconds=1)).count() == 1


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (ReservationState.ISSUED, "issued"),
        (ReservationState.DISCARDED, "discarded"),
        (ReservationState.REVOKED, "revoked already"),
    ],
)
def test_only_an_open_reservation_is_revoked_by_serial(
    ca: CertificateAuthority, state: ReservationState, message: str
) -> None:
    now = utcnow()
    (reservation,) = reservations.reserve(ca=ca, purposes=["x"], not_after=now, now=now)
    SerialReservation.objects.filter(pk=reservation.pk).update(state=state)

    with pytest.raises(CAError, match=message):
        revoke_serial(serial=reservation.serial, reason=RevocationReason.SUPERSEDED)


def test_an_unknown_serial_is_refused_plainly(ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="No certificate with serial 0ABC was issued or reserved here"):
        revoke_serial(serial="0abc", reason=RevocationReason.SUPERSEDED)


def test_reserving_inside_another_transaction_is_refused(ca: CertificateAuthority) -> None:
    """A reservation rolled back with its caller would leave a signed serial unrecorded."""
    from django.db import transaction

    now = utcnow()
    with pytest.raises(RuntimeError), transaction.atomic(durable=True):
        reservations.reserve(ca=ca, purposes=["x"], not_after=now, now=now)


def test_an_intermediate_ca_certificate_uses_a_serial_reserved_on_its_parent(
    ca: CertificateAuthority,
) -> None:
    issuing = create_ca(name="Issuing", parent=ca, make_default=False)

    reservation = SerialReservation.objects.get(ca=ca)
    assert reservation.serial == format_serial(serial=issuing.certificate.serial_number)
    assert reservation.state == ReservationState.ISSUED
    assert reservation.purpose == f"CA certificate of {issuing.slug}"
