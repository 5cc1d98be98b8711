"""Django admin for the CA records: every page renders, certificates are found by serial in any format,
filtered by status, never edited; CAs and CRL publications are read-only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, CrlPublication, RevocationReason
from ca.services.crl import publish_crl
from ca.services.revocation import revoke_certificate
from enroll import flows
from tests.conftest import make_csr

CHANGELIST = reverse("admin:ca_certificate_changelist")

IssueFor = Callable[..., Certificate]


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def certificate(ca: CertificateAuthority, alice: User, issue_for: IssueFor) -> Certificate:
    return issue_for(alice)


def found(client: Client, query: str, **params: str) -> list[int]:
    response = client.get(CHANGELIST, {"q": query, **params})
    assert response.status_code == 200
    return [c.pk for c in response.context["cl"].result_list]


def colons(text: str) -> str:
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


# --- every page renders ----------------------------------------------------------------------------


def test_every_registered_model_has_a_working_list_and_detail(
    admin_client: Client, certificate: Certificate, bob: User
) -> None:
    """Changelists and change (view) pages of every model in the admin answer 200 with some data."""
    flows.submit_csr(owner=bob, data=make_csr())
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    publish_crl(ca=certificate.ca)
    for model in admin.site._registry:
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = admin_client.get(changelist)
        assert response.status_code == 200, changelist
        instance: Model | None = model._default_manager.first()
        if instance is not None:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[instance.pk])
            assert admin_client.get(change).status_code == 200, change
    for model in (Certificate, CertificateAuthority, CrlPublication):
        assert model in admin.site._registry


def test_the_admin_is_titled_and_links_the_revocation_screen(
    admin_client: Client, ca: CertificateAuthority
) -> None:
    content = admin_client.get(reverse("admin:index")).content.decode()
    assert "Enroll administration" in content
    assert reverse("admin:ca-revocation") in content
    assert reverse("admin:ca-revocation") in admin_client.get(CHANGELIST).content.decode()


# --- the certificate list --------------------------------------------------------------------------


def test_the_list_shows_serial_subject_owner_ca_expiry_and_status(
    admin_client: Client, certificate: Certificate
) -> None:
    content = admin_client.get(CHANGELIST).content.decode()
    for text in (certificate.serial_colons, "CN=alice", "alice", "test-root", "Valid", "enroll-badge-green"):
        assert text in content


@pytest.mark.parametrize(
    "form",
    [
        lambda s: s,
        lambda s: s.lower(),
        lambda s: colons(s),
        lambda s: colons(s).lower(),
        lambda s: "0x" + s.lower(),
        lambda s: " " + colons(s)[:11].lower(),  # a part, as far as someone read it out
    ],
    ids=["canonical", "lower", "colons", "colons-lower", "0x", "partial"],
)
def test_search_by_serial_in_any_format(
    admin_client: Client, certificate: Certificate, issue_for: IssueFor, bob: User, form: Callable[[str], str]
) -> None:
    issue_for(bob)
    assert found(admin_client, form(certificate.serial)) == [certificate.pk]


def test_search_by_subject_owner_mail_and_fingerprint(
    admin_client: Client, certificate: Certificate, issue_for: IssueFor, bob: User
) -> None:
    other = issue_for(bob)
    assert found(admin_client, "CN=alice") == [certificate.pk]
    assert found(admin_client, "alice@example.com") == [certificate.pk]
    assert found(admin_client, "bob") == [other.pk]
    assert found(admin_client, certificate.fingerprint_sha256) == [certificate.pk]
    assert found(admin_client, colons(certificate.fingerprint_sha256.upper())) == [certificate.pk]
    assert found(admin_client, "no-such-thing") == []
    assert found(admin_client, "zz:zz:zz") == []


def test_the_status_filter(
    admin_client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    valid = issue_for(alice)
    revoked = issue_for(alice)
    revoke_certificate(certificate=revoked, reason=RevocationReason.SUPERSEDED)
    expired = issue_for(alice)
    Certificate.objects.filter(pk=expired.pk).update(
        not_before=utcnow() - dt.timedelta(days=400), not_after=utcnow() - dt.timedelta(days=35)
    )
    assert found(admin_client, "", status="valid") == [valid.pk]
    assert found(admin_client, "", status="revoked") == [revoked.pk]
    assert found(admin_client, "", status="expired") == [expired.pk]
    assert sorted(found(admin_client, "")) == sorted([valid.pk, revoked.pk, expired.pk])
    assert found(admin_client, "", ca__id__exact=str(ca.pk)) != []
    content = admin_client.get(CHANGELIST).content.decode()
    assert "Revoked" in content
    assert "Expired" in content


def test_the_detail_shows_the_revocation_and_the_pem(admin_client: Client, certificate: Certificate) -> None:
    url = reverse("admin:ca_certificate_change", args=[certificate.pk])
    page = admin_client.get(url).content.decode()
    assert certificate.serial in page
    assert "BEGIN CERTIFICATE" in page
    assert "Not revoked" in page
    assert "Revoke…" in page
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    page = admin_client.get(url).content.decode()
    assert "Key compromise" in page
    assert "Revoke…" not in page


def test_certificates_are_never_added_changed_or_deleted(
    admin_client: Client, certificate: Certificate
) -> None:
    assert admin_client.get(reverse("admin:ca_certificate_add")).status_code == 403
    assert admin_client.get(reverse("admin:ca_certificate_delete", args=[certificate.pk])).status_code == 403
    url = reverse("admin:ca_certificate_change", args=[certificate.pk])
    assert 'name="_save"' not in admin_client.get(url).content.decode()
    assert admin_client.post(url, {"subject": "CN=mallory"}).status_code == 403
    certificate.refresh_from_db()
    assert certificate.subject.startswith("CN=alice")
    response = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [certificate.pk], "post": "yes"}
    )
    assert Certificate.objects.filter(pk=certificate.pk).exists()
    assert response.status_code in (200, 302)


def test_the_revoke_action_opens_the_revocation_screen_with_the_selection(
    admin_client: Client, certificate: Certificate, issue_for: IssueFor, bob: User
) -> None:
    other = issue_for(bob)
    response = admin_client.post(
        CHANGELIST,
        {"action": "revoke_selected", "_selected_action": [certificate.pk, other.pk], "index": "0"},
    )
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == reverse("admin:ca-revocation")
    ids = parse_qs(location.query)["ids"][0].split(",")
    assert sorted(int(i) for i in ids) == sorted([certificate.pk, other.pk])
    screen = admin_client.get(response["Location"])
    assert screen.status_code == 200
    content = screen.content.decode()
    assert certificate.serial_colons in content
    assert other.serial_colons in content
    assert content.count("checked") >= 2
    assert not certificate.__class__.objects.filter(revocation__isnull=False).exists()


def test_staff_who_may_not_revoke_do_not_get_the_action(certificate: Certificate) -> None:
    viewer = User.objects.create_user("viv", "viv@example.com", "pw-123456789", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_certificate"))
    client = Client()
    client.force_login(viewer)
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert "revoke_selected" not in response.content.decode()
    assert reverse("admin:ca-revocation") not in response.content.decode()


# --- CAs and CRL publications ----------------------------------------------------------------------


def test_the_ca_list_links_the_public_files(admin_client: Client, ca: CertificateAuthority) -> None:
    content = admin_client.get(reverse("admin:ca_certificateauthority_changelist")).content.decode()
    for name in ("ca:cert-der", "ca:cert-pem", "ca:crl-der", "ca:crl-pem"):
        assert reverse(name, kwargs={"slug": ca.slug}) in content
    detail = admin_client.get(reverse("admin:ca_certificateauthority_change", args=[ca.pk])).content.decode()
    assert ca.public_url("ca:crl-pem") in detail
    assert admin_client.get(reverse("admin:ca_certificateauthority_add")).status_code == 403
    assert admin_client.get(reverse("admin:ca_certificateauthority_delete", args=[ca.pk])).status_code == 403


def test_crl_publications_are_listed_read_only_and_found_by_number(
    admin_client: Client, ca: CertificateAuthority
) -> None:
    crl = publish_crl(ca=ca)
    url = reverse("admin:ca_crlpublication_changelist")
    response = admin_client.get(url, {"q": str(crl.number)})
    assert response.status_code == 200
    assert [c.pk for c in response.context["cl"].result_list] == [crl.pk]
    assert admin_client.get(url, {"q": crl.sha256[:12]}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": "9" * 40}).context["cl"].result_count == 0
    detail = admin_client.get(reverse("admin:ca_crlpublication_change", args=[crl.pk]))
    assert detail.status_code == 200
    assert str(len(bytes(crl.der))) in detail.content.decode()
    assert admin_client.get(reverse("admin:ca_crlpublication_add")).status_code == 403
    assert admin_client.get(reverse("admin:ca_crlpublication_delete", args=[crl.pk])).status_code == 403
