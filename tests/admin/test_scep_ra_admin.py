"""The SCEP RA certificates in the Django admin: listed and shown read-only (CA, subject, serial, validity,
fingerprint), found by fingerprint, never added, changed or deleted, their key never shown."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from ca.models import CertificateAuthority, ScepRaCertificate
from ca.services import scep as scep_service

CHANGELIST = reverse("admin:ca_scepracertificate_changelist")


@pytest.fixture
def ra(ca: CertificateAuthority) -> ScepRaCertificate:
    return scep_service.create_ra(ca=ca)


@pytest.fixture
def viewer(db: None) -> Client:
    """A staff member allowed to look at RA certificates, and nothing more."""
    user = User.objects.create_user("viewer", "viewer@example.com", "viewer-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_scepracertificate"))
    client = Client()
    client.force_login(user)
    return client


def test_the_list_shows_ca_subject_serial_validity_and_status(viewer: Client, ra: ScepRaCertificate) -> None:
    content = viewer.get(CHANGELIST).content.decode()

    for text in (ra.ca.slug, ra.subject, ra.serial, "Valid", "enroll-badge-green"):
        assert text in content


def test_the_detail_shows_the_fingerprint_and_certificate_but_never_the_key(
    viewer: Client, ra: ScepRaCertificate
) -> None:
    response = viewer.get(reverse("admin:ca_scepracertificate_change", args=[ra.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    for text in (ra.fingerprint_sha256, ra.subject, ra.serial, "-----BEGIN CERTIFICATE-----"):
        assert text in content
    assert ra.key_file not in content
    assert "PRIVATE KEY" not in content


@pytest.mark.parametrize(
    "form", [str.lower, str.upper, lambda f: ":".join(f[i : i + 2] for i in range(0, 64, 2))]
)
def test_it_is_found_by_its_fingerprint_as_clients_print_it(
    viewer: Client, ra: ScepRaCertificate, form: object
) -> None:
    assert callable(form)
    response = viewer.get(CHANGELIST, {"q": form(ra.fingerprint_sha256)})

    assert [row.pk for row in response.context["cl"].result_list] == [ra.pk]


def test_an_expired_ra_is_marked_expired(viewer: Client, ra: ScepRaCertificate) -> None:
    ScepRaCertificate.objects.filter(pk=ra.pk).update(not_after=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))

    content = viewer.get(CHANGELIST).content.decode()

    assert "Expired" in content


def test_nobody_adds_changes_or_deletes_one(admin_user: User, ra: ScepRaCertificate) -> None:
    client = Client()
    client.force_login(admin_user)  # a superuser: still read-only
    change = reverse("admin:ca_scepracertificate_change", args=[ra.pk])

    assert client.get(reverse("admin:ca_scepracertificate_add")).status_code == 403
    assert client.post(change, {"subject": "CN=changed"}).status_code == 403
    assert (
        client.post(reverse("admin:ca_scepracertificate_delete", args=[ra.pk]), {"post": "yes"}).status_code
        == 403
    )
    ra.refresh_from_db()
    assert ra.subject != "CN=changed"
    assert ScepRaCertificate.objects.filter(pk=ra.pk).exists()
