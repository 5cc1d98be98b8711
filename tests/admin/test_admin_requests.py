"""Django admin for enrollment requests: list, search, parsed details, approve and reject through the flow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from ca.models import Certificate, CertificateAuthority
from ca.services.keys import key_path
from enroll import flows
from enroll.admin import IGNORED_SUBJECT_NOTE
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import make_csr

CHANGELIST = reverse("admin:enroll_enrollmentrequest_changelist")

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response


def change_url(request: EnrollmentRequest) -> str:
    return reverse("admin:enroll_enrollmentrequest_change", args=[request.pk])


def messages_of(response: Response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def submitted(ca: CertificateAuthority, alice: User) -> EnrollmentRequest:
    return flows.submit_csr(owner=alice, data=make_csr(common_name="evil.example.com"))


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw-123456789", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def action(client: Client, name: str, *requests: EnrollmentRequest, **extra: Any) -> Response:
    data = {"action": name, "_selected_action": [r.pk for r in requests], **extra}
    return client.post(CHANGELIST, data)


# --- looking ---------------------------------------------------------------------------------------


def test_the_list_shows_requests_with_status_key_and_filters(
    admin_client: Client, submitted: EnrollmentRequest
) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    content = response.content.decode()
    assert "enroll-badge" in content
    assert "Submitted" in content
    assert "ECDSA P-256" in content
    changelist = response.context["cl"]
    date_filter = next(spec for spec in changelist.filter_specs if spec.field_path == "created_at")
    today = next(choice for choice in date_filter.choices(changelist) if choice["display"] == "Today")
    for query in ("?status__exact=submitted", "?kind__exact=csr", today["query_string"]):
        filtered = admin_client.get(f"{CHANGELIST}{query}")
        assert filtered.status_code == 200
        assert filtered.context["cl"].result_count == 1
    assert admin_client.get(f"{CHANGELIST}?status__exact=issued").context["cl"].result_count == 0


@pytest.mark.parametrize(
    "term",
    [
        "alice",
        "alice@example.com",
        "request_sha256",
        "spki_sha256",
        "spki_sha256_colons_upper",
    ],
)
def test_search_finds_requests_by_user_mail_and_fingerprints(
    admin_client: Client, submitted: EnrollmentRequest, bob: User, term: str
) -> None:
    flows.submit_csr(owner=bob, data=make_csr())
    if term == "spki_sha256_colons_upper":
        hex_text = submitted.spki_sha256.upper()
        term = ":".join(hex_text[i : i + 2] for i in range(0, len(hex_text), 2))
    elif term in ("request_sha256", "spki_sha256"):
        term = getattr(submitted, term)
    response = admin_client.get(CHANGELIST, {"q": term})
    assert response.status_code == 200
    assert [r.pk for r in response.context["cl"].result_list] == [submitted.pk]


def test_the_detail_shows_the_parsed_request_read_only(
    admin_client: Client, submitted: EnrollmentRequest
) -> None:
    response = admin_client.get(change_url(submitted))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Key type and size" in content
    assert "ECDSA P-256" in content
    assert submitted.spki_sha256 in content
    assert submitted.request_sha256 in content
    assert "CN=evil.example.com" in content
    assert IGNORED_SUBJECT_NOTE in content
    assert "CN=alice" in content  # what the certificate will really carry
    assert "BEGIN CERTIFICATE REQUEST" in content
    assert 'name="_save"' not in content  # nothing to save: the flow owns every field
    assert "Approve and issue" in content


def test_nothing_is_added_changed_or_deleted_through_the_admin(
    admin_client: Client, submitted: EnrollmentRequest
) -> None:
    assert admin_client.get(reverse("admin:enroll_enrollmentrequest_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:enroll_enrollmentrequest_delete", args=[submitted.pk])).status_code
        == 403
    )
    response = admin_client.post(change_url(submitted), {"status": "issued", "reason": "edited"})
    assert response.status_code == 403
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.SUBMITTED
    assert submitted.reason == ""


# --- approving -------------------------------------------------------------------------------------


def test_approve_action_issues_the_certificate(admin_client: Client, submitted: EnrollmentRequest) -> None:
    response = action(admin_client, "approve_selected", submitted)
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.ISSUED
    assert submitted.certificate is not None
    assert submitted.certificate.subject.startswith("CN=alice")
    assert submitted.decided_by is not None
    assert submitted.decided_by.username == "admin"
    assert any(submitted.certificate.serial in m and "issued" in m for m in messages_of(response))


def test_approve_action_reports_each_outcome(
    admin_client: Client, submitted: EnrollmentRequest, admin_user: User, bob: User
) -> None:
    own = flows.submit_csr(owner=admin_user, data=make_csr())
    other = flows.submit_csr(owner=bob, data=make_csr())
    flows.reject(request_id=other.pk, reason="no", by=None)
    response = action(admin_client, "approve_selected", submitted, own, other)
    texts = messages_of(response)
    assert len(texts) == 3
    assert any(f"#{submitted.pk}" in t and "issued" in t for t in texts)
    assert any(f"#{own.pk}" in t and "own request" in t for t in texts)
    assert any(f"#{other.pk}" in t and "only submitted requests" in t for t in texts)


def test_a_superuser_cannot_approve_their_own_request(
    ca: CertificateAuthority, admin_user: User, admin_client: Client
) -> None:
    own = flows.submit_csr(owner=admin_user, data=make_csr())
    response = action(admin_client, "approve_selected", own)
    assert any("Nobody may approve their own request" in m for m in messages_of(response))
    response = admin_client.post(reverse("admin:enroll_enrollmentrequest_approve", args=[own.pk]))
    assert response.status_code == 302
    assert any("Nobody may approve their own request" in m for m in messages_of(response))
    own.refresh_from_db()
    assert own.status == RequestStatus.SUBMITTED
    assert own.certificate is None
    assert not Certificate.objects.exists()
    page = admin_client.get(change_url(own)).content.decode()
    assert "nobody approves their own request" in page
    assert "Approve and issue" not in page


def test_a_failed_issuance_is_reported_with_its_reason(
    admin_client: Client, submitted: EnrollmentRequest, ca: CertificateAuthority
) -> None:
    key_path(ca).unlink()  # the CA key is gone: issuing fails
    response = action(admin_client, "approve_selected", submitted)
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.FAILED
    unreadable = f"The key of CA '{ca.slug}' cannot be read"
    assert any("no certificate" in m and unreadable in m for m in messages_of(response))


def test_the_approve_button_issues_and_needs_post(admin_client: Client, submitted: EnrollmentRequest) -> None:
    url = reverse("admin:enroll_enrollmentrequest_approve", args=[submitted.pk])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == change_url(submitted)
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.ISSUED


def test_an_unknown_request_gives_404(admin_client: Client, ca: CertificateAuthority) -> None:
    assert admin_client.post(reverse("admin:enroll_enrollmentrequest_approve", args=[999])).status_code == 404
    assert admin_client.get(reverse("admin:enroll_enrollmentrequest_reject", args=[999])).status_code == 404


# --- rejecting -------------------------------------------------------------------------------------


def test_reject_action_asks_for_a_reason_first(admin_client: Client, submitted: EnrollmentRequest) -> None:
    response = action(admin_client, "reject_selected", submitted, index="0")
    assert response.status_code == 200
    content = response.content.decode()
    assert 'name="reason"' in content
    assert f"#{submitted.pk}" in content
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.SUBMITTED


@pytest.mark.parametrize("reason", ["", "   "])
def test_reject_action_without_a_reason_shows_the_error_and_changes_nothing(
    admin_client: Client, submitted: EnrollmentRequest, reason: str
) -> None:
    response = action(admin_client, "reject_selected", submitted, post="yes", reason=reason)
    assert response.status_code == 200
    assert "Give a reason for the rejection" in response.content.decode()
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.SUBMITTED
    assert submitted.reason == ""


def test_reject_action_with_a_reason_rejects(admin_client: Client, submitted: EnrollmentRequest) -> None:
    response = action(admin_client, "reject_selected", submitted, post="yes", reason="Unknown device")
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.REJECTED
    assert submitted.reason == "Unknown device"
    assert submitted.decided_by is not None
    assert submitted.decided_by.username == "admin"
    assert any("rejected" in m for m in messages_of(response))


def test_the_reject_button_on_the_change_page(admin_client: Client, submitted: EnrollmentRequest) -> None:
    url = reverse("admin:enroll_enrollmentrequest_reject", args=[submitted.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"reason": ""})
    assert response.status_code == 200
    assert "Give a reason" in response.content.decode()
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.SUBMITTED
    response = admin_client.post(url, {"reason": "Wrong key type for this service"})
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.REJECTED


# --- permissions and CSRF --------------------------------------------------------------------------


def test_staff_with_the_change_permission_decides(submitted: EnrollmentRequest) -> None:
    client = Client()
    client.force_login(staff("dora", "change_enrollmentrequest"))
    assert client.get(CHANGELIST).status_code == 200
    action(client, "approve_selected", submitted)
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.ISSUED


def test_staff_who_may_only_look_cannot_decide(submitted: EnrollmentRequest) -> None:
    client = Client()
    client.force_login(staff("eve", "view_enrollmentrequest"))
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert "approve_selected" not in response.content.decode()
    page = client.get(change_url(submitted)).content.decode()
    assert "Approve and issue" not in page
    action(client, "approve_selected", submitted)
    assert (
        client.post(reverse("admin:enroll_enrollmentrequest_approve", args=[submitted.pk])).status_code == 403
    )
    assert (
        client.post(reverse("admin:enroll_enrollmentrequest_reject", args=[submitted.pk])).status_code == 403
    )
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.SUBMITTED


def test_staff_without_any_permission_sees_nothing(submitted: EnrollmentRequest) -> None:
    client = Client()
    client.force_login(staff("frank"))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_url(submitted)).status_code == 403


def test_decisions_need_the_csrf_token(admin_user: User, submitted: EnrollmentRequest) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert (
        client.post(reverse("admin:enroll_enrollmentrequest_approve", args=[submitted.pk])).status_code == 403
    )
    url = reverse("admin:enroll_enrollmentrequest_reject", args=[submitted.pk])
    assert client.post(url, {"reason": "x"}).status_code == 403
    assert action(client, "approve_selected", submitted).status_code == 403
    submitted.refresh_from_db()
    assert submitted.status == RequestStatus.SUBMITTED
