"""Approvals through the signer: the approver's authorisation is committed before anything is signed, and a
stopped signer leaves every request as it was (no serial reserved, nothing approved, nothing failed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from ca.models import CertificateAuthority, IssuanceAuthorisation, ReservationState, SerialReservation
from ca.signer.server import Signer
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.helpers import make_csr


def _submitted(owner: User, count: int) -> list[int]:
    return [flows.submit_csr(owner=owner, data=make_csr()).pk for _ in range(count)]


def test_a_bulk_approval_signs_through_the_signer_with_the_approvers_authorisation(
    signer: Signer, ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    ids = _submitted(alice, 3)
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        results = flows.approve_many(request_ids=ids, actor=admin_user)
    assert [result.outcome for result in results] == [flows.ApprovalOutcome.ISSUED] * 3
    signer.writer.stop()
    serials = {result.certificate.serial for result in results if result.certificate is not None}
    grants = IssuanceAuthorisation.objects.filter(serial__in=serials)
    assert {(grant.approver_name, grant.used_at is not None) for grant in grants} == {("admin", True)}


def test_a_stopped_signer_leaves_every_request_as_it_was(
    tmp_path: Path, ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    one, *many = _submitted(alice, 3)
    with override_settings(ENROLL_SIGNER_SOCKET=str(tmp_path / "stopped.sock")):
        with pytest.raises(flows.FlowError, match=r"^The signer is not running"):
            flows.approve(request_id=one, by=admin_user)
        results = flows.approve_many(request_ids=many, actor=admin_user)
    assert {result.outcome for result in results} == {flows.ApprovalOutcome.REFUSED}
    assert all(result.reason.startswith("The signer is not running") for result in results)
    statuses = EnrollmentRequest.objects.filter(pk__in=[one, *many]).values_list("status", flat=True)
    assert set(statuses) == {RequestStatus.SUBMITTED}
    assert not SerialReservation.objects.filter(state=ReservationState.RESERVED).exists()
    assert not IssuanceAuthorisation.objects.exists()
