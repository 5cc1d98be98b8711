"""The audit log in the admin: visible, searchable, filterable, and not editable even by superusers."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client, RequestFactory
from django.urls import reverse

from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, RevocationReason
from ca.services.crl import publish_crl
from ca.services.revocation import revoke_certificate
from enroll import flows
from tests.conftest import make_csr

CHANGELIST = reverse("admin:ca_auditentry_changelist")


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def history(ca: CertificateAuthority, alice: User, admin_user: User) -> Certificate:
    """A request approved by the admin, its certificate revoked by the admin and a CRL published."""
    request = flows.submit_csr(owner=alice, data=make_csr())
    issued = flows.approve(request_id=request.pk, by=admin_user)
    assert issued.certificate is not None
    revoke_certificate(certificate=issued.certificate, reason=RevocationReason.KEY_COMPROMISE, by=admin_user)
    publish_crl(ca=ca, by=admin_user)
    return issued.certificate


def results(client: Client, **params: str) -> list[AuditEntry]:
    response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_the_log_lists_who_did_what_to_what(admin_client: Client, history: Certificate) -> None:
    content = admin_client.get(CHANGELIST).content.decode()
    for text in (
        "Certificate issued",
        "Certificate revoked",
        "CRL published",
        "CA created",
        "admin",
        history.serial,
    ):
        assert text in content
    entry = AuditEntry.objects.filter(event=AuditEvent.CERTIFICATE_REVOKED).get()
    detail = admin_client.get(reverse("admin:ca_auditentry_change", args=[entry.pk]))
    assert detail.status_code == 200
    assert history.serial in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()


def test_search_by_serial_request_hash_actor_and_crl_number(
    admin_client: Client, history: Certificate
) -> None:
    by_serial = results(admin_client, q=history.serial_colons.lower())
    assert {e.event for e in by_serial} >= {AuditEvent.CERTIFICATE_ISSUED, AuditEvent.CERTIFICATE_REVOKED}
    assert all(e.serial == history.serial for e in by_serial)
    by_hash = results(admin_client, q=history.request_sha256)
    assert by_hash
    assert all(e.request_sha256 == history.request_sha256 for e in by_hash)
    assert AuditEvent.CERTIFICATE_ISSUED in {e.event for e in by_hash}
    by_actor = results(admin_client, q="admin")
    assert by_actor
    assert all(e.actor_name == "admin" or "admin" in e.subject_user for e in by_actor)
    crl_entry = AuditEntry.objects.filter(event=AuditEvent.CRL_PUBLISHED, crl_number__isnull=False).first()
    assert crl_entry is not None
    assert crl_entry.crl_number is not None
    assert crl_entry in results(admin_client, q=str(crl_entry.crl_number))
    assert results(admin_client, q="nobody-did-this") == []
    assert results(admin_client, q="9" * 30) == []


def test_filters_by_event_and_date(admin_client: Client, history: Certificate) -> None:
    revoked = results(admin_client, event__exact=AuditEvent.CERTIFICATE_REVOKED)
    assert [e.serial for e in revoked] == [history.serial]
    response = admin_client.get(CHANGELIST)
    changelist = response.context["cl"]
    date_filter = next(spec for spec in changelist.filter_specs if spec.field_path == "created_at")
    today = next(choice for choice in date_filter.choices(changelist) if choice["display"] == "Today")
    assert (
        admin_client.get(CHANGELIST + today["query_string"]).context["cl"].result_count
        == AuditEntry.objects.count()
    )


def test_nobody_adds_changes_or_deletes_entries_not_even_a_superuser(
    admin_client: Client, admin_user: User, history: Certificate
) -> None:
    entry = AuditEntry.objects.first()
    assert entry is not None
    model_admin = admin.site._registry[AuditEntry]
    request = RequestFactory().get(CHANGELIST)
    request.user = admin_user
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)
    assert model_admin.has_view_permission(request, entry)
    assert model_admin.get_actions(request) == {}
    assert admin_client.get(reverse("admin:ca_auditentry_add")).status_code == 403
    assert admin_client.post(reverse("admin:ca_auditentry_add"), {"event": "sign_up"}).status_code == 403
    change = reverse("admin:ca_auditentry_change", args=[entry.pk])
    assert admin_client.post(change, {"detail": "rewritten"}).status_code == 403
    delete = reverse("admin:ca_auditentry_delete", args=[entry.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    entry_after = AuditEntry.objects.get(pk=entry.pk)
    assert entry_after.detail == entry.detail
    page = admin_client.get(CHANGELIST).content.decode()
    assert "delete_selected" not in page
    assert reverse("admin:ca_auditentry_add") not in page


def test_staff_see_the_log_only_with_the_view_permission(history: Certificate) -> None:
    def client_with(*codenames: str) -> Client:
        user = User.objects.create_user(f"staff{len(codenames)}", "", "pw-123456789", is_staff=True)
        for codename in codenames:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client = Client()
        client.force_login(user)
        return client

    assert client_with().get(CHANGELIST).status_code == 403
    assert client_with("view_auditentry").get(CHANGELIST).status_code == 200


def test_nothing_in_the_admin_writes_audit_entries_by_looking(
    admin_client: Client, history: Certificate
) -> None:
    count = AuditEntry.objects.count()
    for url in (CHANGELIST, reverse("admin:ca-revocation"), reverse("admin:ca_certificate_changelist")):
        assert admin_client.get(url).status_code == 200
    assert AuditEntry.objects.count() == count
