"""A decision taken in the admin's queue is visible to the owner on the portal's request page: when, by
whom (or "an administrator" when the account is gone or it came from the command line), and the reason."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ca.models import CertificateAuthority
from enroll import flows
from tests.conftest import make_csr


def owner_page(owner: User, pk: int) -> str:
    client = Client()
    client.force_login(owner)
    return client.get(reverse("portal:request-detail", args=[pk])).content.decode()


def test_the_owner_sees_who_rejected_with_next_when_and_why(
    admin_user: User, ca: CertificateAuthority, alice: User
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    admin = Client()
    admin.force_login(admin_user)
    admin.post(
        reverse("admin:enroll_enrollmentrequest_reject", args=[request.pk]),
        {"_next": "1", "reason": "Use the company laptop"},
    )
    request.refresh_from_db()
    page = owner_page(alice, request.pk)
    assert request.decided_at is not None
    assert f"{request.decided_at:%Y-%m-%d %H:%M} UTC</time> by admin" in page
    assert "Reason: Use the company laptop" in page


def test_a_decision_without_an_account_reads_an_administrator(ca: CertificateAuthority, alice: User) -> None:
    rejected = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=rejected.pk, reason="Unknown device", by=None)
    assert "by an administrator" in owner_page(alice, rejected.pk)
    approved = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk, by=None)
    assert "by an administrator" in owner_page(alice, approved.pk)
