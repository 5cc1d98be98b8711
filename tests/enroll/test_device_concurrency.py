"""Devices sending at once, on PostgreSQL: one code, one request per repeat, never past a code's uses.

Each thread has its own database connection, as separate web processes would (tests.ca's helper).
"""

from __future__ import annotations

from functools import partial

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import Permission, User
from django.db import connection

from ca.models import Certificate, CertificateAuthority
from enroll import flows
from enroll.flows import DeviceOutcomeKind
from enroll.models import EnrollmentCode, EnrollmentRequest, RequestKind
from tests.ca.test_postgres_concurrency import run_together
from tests.helpers import make_csr

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
    ),
    pytest.mark.django_db(transaction=True),
]


def csr_der(key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    return x509.load_pem_x509_csr(make_csr(key)).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def approver(db: None) -> User:
    user = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    return User.objects.get(pk=user.pk)


def enroll(code: str, der: bytes) -> flows.DeviceOutcome:
    return flows.enroll_with_code(code=code, csr_der=der, kind=RequestKind.EST, client_address="192.0.2.1")


def test_one_request_sent_six_times_at_once_is_one_request_and_one_certificate(
    ca: CertificateAuthority, alice: User, approver: User
) -> None:
    row, code = flows.create_enrollment_code(owner=alice, created_by=approver, uses=5)
    der = csr_der()

    outcomes, errors = run_together([partial(enroll, code, der) for _ in range(6)])

    assert errors == []
    assert EnrollmentRequest.objects.count() == 1
    assert Certificate.objects.count() <= 1
    assert {o.request.pk for o in outcomes if o.request is not None} == {EnrollmentRequest.objects.get().pk}
    assert {o.kind for o in outcomes} <= {DeviceOutcomeKind.ISSUED, DeviceOutcomeKind.PENDING}
    row.refresh_from_db()
    assert row.uses == 1


def test_six_devices_on_one_single_use_code_get_one_certificate(
    ca: CertificateAuthority, alice: User, approver: User
) -> None:
    _row, code = flows.create_enrollment_code(owner=alice, created_by=approver)
    requests = [csr_der(ec.generate_private_key(ec.SECP256R1())) for _ in range(6)]

    outcomes, errors = run_together([partial(enroll, code, der) for der in requests])

    assert errors == []
    assert sorted(o.kind for o in outcomes).count(DeviceOutcomeKind.ISSUED) == 1
    refused = [o for o in outcomes if o.kind == DeviceOutcomeKind.REFUSED]
    assert len(refused) == 5
    assert all("used already" in o.reason for o in refused)
    assert Certificate.objects.count() == 1
    assert EnrollmentCode.objects.get().uses == 1
