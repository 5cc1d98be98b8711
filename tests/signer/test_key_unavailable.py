"""A CA key that cannot sign at all (a token with a wrong PIN, a token gone, the signer stopped) is one case:
approve, approve_many and a pre-approved device enrollment say "the CA key is not available" and change
nothing: every request stays SUBMITTED (a device's is never stored), no serial stays reserved, no
certificate is stored, and the same step works once the operator fixed it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings
from pytest_django.fixtures import Settings

from ca.models import Certificate, CertificateAuthority, ReservationState, SerialReservation
from ca.pki import pkcs11 as pki_pkcs11
from ca.services import keys
from ca.signer.server import Signer
from enroll import flows
from enroll.models import EnrollmentCode, EnrollmentRequest, RequestKind, RequestStatus
from tests.harness.softhsm import SoftHsm, softhsm
from tests.helpers import make_csr

pytestmark = [pytest.mark.real_client, pytest.mark.django_db]

NOT_AVAILABLE = r"^The CA key is not available: .*refused the PIN"


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    with softhsm(tmp_path_factory.mktemp("softhsm")) as made:
        yield made


@pytest.fixture
def token_ca(hsm: SoftHsm, settings: Settings, db: None) -> CertificateAuthority:
    """The default CA, its key in a new SoftHSM2 token, the portal reading the token's PIN file."""
    token = hsm.token()
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file())
    call_command("init_ca", name="Token Root CA", slug="token-root", default=True, **hsm.options(token))
    keys.clear_key_cache()
    return CertificateAuthority.objects.get(slug="token-root")


def wrong_pin(hsm: SoftHsm, settings: Settings) -> None:
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file("654321", name="wrong-pin"))
    keys.clear_key_cache()


def right_pin(hsm: SoftHsm, settings: Settings) -> None:
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file())
    keys.clear_key_cache()


def submitted(owner: User, count: int) -> list[int]:
    return [flows.submit_csr(owner=owner, data=make_csr()).pk for _ in range(count)]


def assert_nothing_changed(ids: list[int]) -> None:
    statuses = EnrollmentRequest.objects.values_list("status", flat=True)
    assert list(statuses.filter(pk__in=ids)) == [RequestStatus.SUBMITTED] * len(ids)
    assert not SerialReservation.objects.filter(state=ReservationState.RESERVED).exists()
    assert not Certificate.objects.exists()


def test_approve_and_approve_many_with_a_wrong_pin_change_nothing_and_work_once_it_is_right(
    token_ca: CertificateAuthority, hsm: SoftHsm, settings: Settings, alice: User, admin_user: User
) -> None:
    one, *many = submitted(alice, 3)
    wrong_pin(hsm, settings)

    with pytest.raises(flows.SigningUnavailable, match=NOT_AVAILABLE):
        flows.approve(request_id=one, by=admin_user)
    results = flows.approve_many(request_ids=many, actor=admin_user)

    assert {result.outcome for result in results} == {flows.ApprovalOutcome.REFUSED}
    assert all("refused the PIN" in result.reason for result in results), results
    assert_nothing_changed([one, *many])

    right_pin(hsm, settings)
    results = flows.approve_many(request_ids=[one, *many], actor=admin_user)
    assert {result.outcome for result in results} == {flows.ApprovalOutcome.ISSUED}


def test_a_token_that_fails_while_signing_rolls_the_approval_back(
    token_ca: CertificateAuthority, hsm: SoftHsm, settings: Settings, alice: User, admin_user: User
) -> None:
    """The key loaded when the serials were reserved, and the token refused the signature (its PIN changed
    and the session was opened again): the step rolls back as if the key had never been there."""
    ids = submitted(alice, 2)
    backend = keys.key_backend(token_ca)
    assert isinstance(backend, pki_pkcs11.Pkcs11KeyBackend)
    wrong_pin(hsm, settings)
    backend._pin = "654321"  # the session is opened again with this PIN
    pki_pkcs11.reinitialize_modules()  # the token forgot every session, as when it was unplugged
    keys.remember_token_backend(token_ca, backend)  # reserve() finds the key as a busy worker has it

    results = flows.approve_many(request_ids=ids, actor=admin_user)

    assert {result.outcome for result in results} == {flows.ApprovalOutcome.REFUSED}, results
    assert all("The CA key is not available" in result.reason for result in results), results
    assert_nothing_changed(ids)


def test_a_pre_approved_device_enrollment_with_the_token_unavailable_stores_nothing_and_says_try_later(
    token_ca: CertificateAuthority, hsm: SoftHsm, settings: Settings, alice: User, admin_user: User
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=admin_user, device_name="router")
    assert row.pre_approved
    der = x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER)
    wrong_pin(hsm, settings)

    outcome = flows.enroll_with_code(code=code, csr_der=der, kind=RequestKind.EST, client_address="192.0.2.1")

    assert outcome.kind == flows.DeviceOutcomeKind.REFUSED
    assert outcome.cause == flows.RefusalCause.UNAVAILABLE  # EST 503: try again later
    assert "refused the PIN" in outcome.reason, outcome.reason
    assert not EnrollmentRequest.objects.exists()
    assert EnrollmentCode.objects.get(pk=row.pk).uses == 0
    assert_nothing_changed([])

    right_pin(hsm, settings)
    outcome = flows.enroll_with_code(code=code, csr_der=der, kind=RequestKind.EST, client_address="192.0.2.1")
    assert outcome.kind == flows.DeviceOutcomeKind.ISSUED, outcome.reason


def test_through_the_signer_a_token_with_a_wrong_pin_is_the_same_case(
    token_ca: CertificateAuthority,
    hsm: SoftHsm,
    settings: Settings,
    signer: Signer,
    alice: User,
    admin_user: User,
    tmp_path: Path,
) -> None:
    ids = submitted(alice, 2)
    wrong_pin(hsm, settings)  # the signer's own configuration: its threads open the token
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        results = flows.approve_many(request_ids=ids, actor=admin_user)
    assert {result.outcome for result in results} == {flows.ApprovalOutcome.REFUSED}, results
    assert all("refused the PIN" in result.reason for result in results), results
    assert_nothing_changed(ids)
