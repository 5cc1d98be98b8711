"""The certificate admin shows the owner's device name in its list and on the certificate page, and finds
certificates by it; it stays read-only there."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ca.models import Certificate, CertificateAuthority
from enroll import flows
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:ca_certificate_changelist")


def named_certificate(user: User, name: str) -> Certificate:
    request = flows.submit_csr(owner=user, data=make_csr(), device_name=name)
    decided = flows.approve(request_id=request.pk)
    assert decided.certificate is not None, decided.reason
    return decided.certificate


@pytest.fixture
def staff(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_the_certificate_list_has_a_device_column(
    staff: Client, ca: CertificateAuthority, alice: User
) -> None:
    named_certificate(alice, "Work laptop")

    body = staff.get(CHANGELIST).content.decode()

    assert "column-device_name" in body
    assert "Work laptop" in body


def test_the_certificate_list_finds_a_certificate_by_its_device_name(
    staff: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    laptop = named_certificate(alice, "Work laptop")
    named_certificate(bob, "Phone")

    response = staff.get(CHANGELIST, {"q": "laptop"})

    assert [c.pk for c in response.context["cl"].result_list] == [laptop.pk]


def test_the_certificate_page_shows_the_device_name_read_only(
    staff: Client, ca: CertificateAuthority, alice: User
) -> None:
    certificate = named_certificate(alice, "Work <laptop>")

    body = staff.get(reverse("admin:ca_certificate_change", args=[certificate.pk])).content.decode()

    assert "Work &lt;laptop&gt;" in body
    assert 'name="device_name"' not in body
