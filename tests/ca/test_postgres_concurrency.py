"""Several web processes at once on PostgreSQL: row locks, one certificate, one CRL number sequence.

Each thread has its own database connection (as separate processes would) and closes it when done.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import User
from django.db import connection

from ca.models import Certificate, CertificateAuthority, CrlPublication, Revocation, RevocationReason
from ca.services import issuance
from ca.services.crl import publish_crl
from ca.services.issuance import issue_certificate
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import make_csr, signed_by

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
    ),
    pytest.mark.django_db(transaction=True),
]


def run_together(targets: Sequence[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Start all targets at once (a barrier), each on its own connection; return (results, errors)."""
    barrier = threading.Barrier(len(targets))
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(target: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            result = target()
            with lock:
                results.append(result)
        except BaseException as exc:  # collected and checked by the test
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a thread hung (lock wait?)"
    return results, errors


@pytest.fixture
def slow_signing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signing takes a moment, so the other approvers surely arrive while the row lock is held."""
    issue = issuance.issue

    def slow_issue(**kwargs: Any) -> list[Certificate | str]:
        time.sleep(0.3)
        return issue(**kwargs)

    monkeypatch.setattr(issuance, "issue", slow_issue)


@pytest.mark.parametrize("approvers", [2, 6])
def test_administrators_approving_one_request_at_once_give_exactly_one_certificate(
    ca: CertificateAuthority, alice: User, slow_signing: None, approvers: int
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    admins = [
        User.objects.create_superuser(f"admin{i}", f"admin{i}@example.com", "x") for i in range(approvers)
    ]

    results, errors = run_together(
        [partial(flows.approve, request_id=request.pk, by=admin) for admin in admins]
    )

    assert len(results) == 1, errors
    assert len(errors) == approvers - 1
    assert all(isinstance(error, flows.FlowError) for error in errors), errors
    assert all("issued" in str(error) for error in errors)
    assert results[0].status == RequestStatus.ISSUED
    stored = EnrollmentRequest.objects.get(pk=request.pk)
    assert stored.status == RequestStatus.ISSUED
    assert Certificate.objects.count() == 1
    assert stored.certificate == Certificate.objects.get()
    assert stored.decided_by == results[0].decided_by


def test_concurrent_revocations_give_strictly_increasing_crl_numbers_and_the_newest_lists_all(
    ca: CertificateAuthority, alice: User
) -> None:
    certificates = [
        issue_certificate(
            request_der=make_csr(encoding=serialization.Encoding.DER),
            subject=flows.subject_for(alice),
            owner=alice,
        )
        for _ in range(10)
    ]
    first = CrlPublication.objects.filter(ca=ca).latest()

    def revoke(pk: int) -> Revocation:
        certificate = Certificate.objects.get(pk=pk)
        return revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)

    revokers = [partial(revoke, c.pk) for c in certificates]
    publishers = [partial(publish_crl, ca=ca) for _ in range(3)]  # cron running meanwhile

    _, errors = run_together([*revokers, *publishers])

    assert not errors, errors
    assert Revocation.objects.count() == len(certificates)
    publications = list(CrlPublication.objects.filter(ca=ca, pk__gt=first.pk).order_by("pk"))
    assert len(publications) == len(revokers) + len(publishers)
    numbers = [first.number, *(p.number for p in publications)]
    assert all(later > earlier for earlier, later in itertools.pairwise(numbers)), numbers
    newest = max(publications, key=lambda p: p.number)
    assert newest == publications[-1]
    crl = x509.load_der_x509_crl(bytes(newest.der))
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == newest.number
    assert signed_by(crl, ca.certificate)
    assert {entry.serial_number for entry in crl} == {c.serial_int for c in certificates}
    listed_before: set[int] = set()
    for publication in publications:  # each CRL lists at least what the one before it listed
        listed = {entry.serial_number for entry in x509.load_der_x509_crl(bytes(publication.der))}
        assert listed >= listed_before
        listed_before = listed


def test_concurrent_issuing_gives_unique_serials(ca: CertificateAuthority, alice: User) -> None:
    requests = [flows.submit_csr(owner=alice, data=make_csr()) for _ in range(8)]

    results, errors = run_together([partial(flows.approve, request_id=r.pk) for r in requests])

    assert not errors, errors
    assert all(r.status == RequestStatus.ISSUED for r in results)
    serials = list(Certificate.objects.values_list("serial", flat=True))
    assert len(serials) == len(set(serials)) == 8
