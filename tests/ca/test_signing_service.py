"""Every CA signature of the services goes through the CA's key backend: a backend that cannot sign, or whose
signature does not verify with the CA certificate's key, stores nothing, for certificates, CRLs and OCSP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.errors import CAError
from ca.models import (
    Certificate,
    CertificateAuthority,
    CrlPublication,
    ReservationState,
    SerialReservation,
)
from ca.pki import signing
from ca.pki.errors import CAKeyError
from ca.pki.serials import format_serial
from ca.pki.signing import Purpose, SignatureHash
from ca.services import keys, reservations
from ca.services.crl import publish_crl
from ca.services.ocsp import ocsp_response
from enroll import flows
from enroll.models import RequestStatus
from tests.ca.backends import Fault, Spy, SpyBackend, install_spy
from tests.ca.test_ocsp import ocsp_request
from tests.conftest import make_csr

TOKEN_MISSING = "The CA key's token is not present; the operator must plug it in."
NOT_VERIFIED = "does not verify with the CA certificate's public key"


def wrong_signature(backend: SpyBackend, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
    """Signs other bytes than it was handed."""
    return backend.inner.sign(data=data + b"!", algorithm=algorithm, purpose=purpose)


def another_key(backend: SpyBackend, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
    """Signs with another key of the CA key's type (the wrong key in the token)."""
    other = signing.PrivateKeyBackend(key=ec.generate_private_key(ec.SECP256R1()))
    return other.sign(data=data, algorithm=algorithm, purpose=purpose)


def token_missing(backend: SpyBackend, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
    raise CAKeyError(TOKEN_MISSING)


FAULTS = [
    pytest.param(wrong_signature, NOT_VERIFIED, id="wrong-signature"),
    pytest.param(another_key, NOT_VERIFIED, id="another-key"),
    pytest.param(token_missing, TOKEN_MISSING, id="token-missing"),
]


@pytest.fixture
def spy(ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> Spy:
    return install_spy(monkeypatch)


def reservation_states() -> dict[str, str]:
    return dict(
        SerialReservation.objects.filter(purpose__startswith="request").values_list("serial", "state")
    )


@pytest.mark.parametrize(("fault", "message"), FAULTS)
def test_a_backend_that_does_not_sign_with_the_ca_key_fails_every_order_and_stores_nothing(
    ca: CertificateAuthority, alice: User, admin_user: User, spy: Spy, fault: Fault, message: str
) -> None:
    ids = [flows.submit_csr(owner=alice, data=make_csr()).pk for _ in range(2)]
    spy.fault = fault

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert [r.outcome for r in results] == [flows.ApprovalOutcome.FAILED] * 2
    assert all(message in r.reason for r in results)
    assert not Certificate.objects.exists()
    assert len(spy.signed(Purpose.CERTIFICATE)) == 1  # the batch stops at the first failure
    # no CA signature carried either serial: both reservations are closed, none left to revoke
    assert set(reservation_states().values()) == {ReservationState.DISCARDED}


def test_a_backend_that_fails_part_way_stores_nothing_and_leaves_the_signed_serial_open(
    ca: CertificateAuthority, alice: User, admin_user: User, spy: Spy
) -> None:
    ids = [flows.submit_csr(owner=alice, data=make_csr()).pk for _ in range(3)]
    calls = 0

    def fail_second(backend: SpyBackend, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise CAKeyError(TOKEN_MISSING)
        return backend.inner.sign(data=data, algorithm=algorithm, purpose=purpose)

    spy.fault = fail_second

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert [r.outcome for r in results] == [flows.ApprovalOutcome.FAILED] * 3
    assert all(TOKEN_MISSING in r.reason for r in results)
    assert not Certificate.objects.exists()
    signed, failed = (format_serial(serial=s) for s in spy.certificate_serials())
    states = reservation_states()
    # the first certificate was signed by the CA key and never stored: open, as after a crash
    assert states.pop(signed) == ReservationState.RESERVED
    assert set(states.values()) == {ReservationState.DISCARDED}
    assert failed in states
    later = utcnow() + reservations.UNSTORED_AFTER + dt.timedelta(minutes=1)
    assert list(reservations.unstored(now=later).values_list("serial", flat=True)) == [signed]


def test_a_backend_holding_another_key_than_the_certificate_signs_nothing(
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    certificate = issue_for(alice)
    crls = CrlPublication.objects.count()
    calls: list[tuple[Purpose, bytes]] = []
    other = signing.PrivateKeyBackend(key=ec.generate_private_key(ec.SECP256R1()))
    monkeypatch.setattr(keys, "key_backend", lambda ca: SpyBackend(other, calls))

    decided = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk)
    with pytest.raises(CAError, match="is not the key of its certificate"):
        publish_crl(ca=ca)
    with pytest.raises(CAError, match="is not the key of its certificate"):
        ocsp_response(request_der=ocsp_request(certificate, nonce=b"n" * 16), ca=ca)

    assert decided.status == RequestStatus.FAILED
    assert "is not the key of its certificate" in decided.reason
    assert calls == []
    assert list(Certificate.objects.all()) == [certificate]
    assert CrlPublication.objects.count() == crls


@pytest.mark.parametrize(("fault", "message"), FAULTS)
def test_a_crl_the_backend_does_not_sign_with_the_ca_key_is_not_stored(
    ca: CertificateAuthority, spy: Spy, fault: Fault, message: str
) -> None:
    before = list(CrlPublication.objects.values_list("number", flat=True))
    spy.fault = fault

    with pytest.raises(CAError, match=message):
        publish_crl(ca=ca)

    assert list(CrlPublication.objects.values_list("number", flat=True)) == before
    assert len(spy.signed(Purpose.CRL)) == 1


@pytest.mark.parametrize(("fault", "message"), FAULTS)
def test_an_ocsp_answer_the_backend_does_not_sign_with_the_ca_key_is_not_given(
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    spy: Spy,
    fault: Fault,
    message: str,
) -> None:
    certificate = issue_for(alice)
    spy.fault = fault

    with pytest.raises(CAError, match=message):
        ocsp_response(request_der=ocsp_request(certificate, nonce=b"n" * 16), ca=ca)
    response = Client().post(
        reverse("ca:ocsp", kwargs={"slug": ca.slug}),
        data=ocsp_request(certificate, nonce=b"m" * 16),
        content_type="application/ocsp-request",
    )

    assert response.status_code == 503
    assert len(spy.signed(Purpose.OCSP_RESPONSE)) == 2


def test_every_ca_signature_of_issuing_revoking_and_answering_goes_through_the_backend(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate], spy: Spy
) -> None:
    certificate = issue_for(alice)
    publication = publish_crl(ca=ca)
    answer = ocsp_response(request_der=ocsp_request(certificate, nonce=b"n" * 16), ca=ca)

    assert spy.certificate_serials() == [certificate.serial_int]
    assert len(spy.signed(Purpose.CRL)) == 1
    assert len(spy.signed(Purpose.OCSP_RESPONSE)) == 1
    certificate.x509.verify_directly_issued_by(ca.certificate)
    assert publication.number > 0
    assert answer.status == "good"
