"""The approvers' queue in the Django admin: the pending count in every admin page's header and on the
index, the Enrollment app first, the request list opening on Submitted oldest first with its context
columns (account age, verified address, renewal of, key seen before, time waiting against the service
level), and on a request's page Approve and next / Reject and next, j/k neighbours and the owner's other
requests and certificates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django.fixtures import Settings

from ca.clock import utcnow
from ca.models import BlockedKey, BlockedKeySource, Certificate, CertificateAuthority
from enroll import flows
from enroll.admin import row_contexts, waiting_colour
from enroll.models import EnrollmentRequest, RequestStatus
from tests.admin.test_admin_requests import change_url, messages_of, staff
from tests.conftest import make_csr

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

CHANGELIST = reverse("admin:enroll_enrollmentrequest_changelist")
APPROVE = "admin:enroll_enrollmentrequest_approve"
REJECT = "admin:enroll_enrollmentrequest_reject"


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def submit(owner: User, *, hours_ago: float = 0, csr: bytes | None = None) -> EnrollmentRequest:
    return flows.submit_csr(owner=owner, data=csr or make_csr(), now=utcnow() - dt.timedelta(hours=hours_ago))


def listed(response: Response) -> list[int]:
    return [item.pk for item in response.context["cl"].result_list]


# --- the pending count ---------------------------------------------------------------------------------


def test_every_admin_page_header_says_how_many_requests_wait_and_links_to_the_queue(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    submit(alice)
    submit(bob)
    flows.reject(request_id=submit(bob).pk, reason="no", by=None)
    for url in (reverse("admin:index"), reverse("admin:auth_user_changelist"), CHANGELIST):
        content = admin_client.get(url, follow=True).content.decode()
        assert f'href="{CHANGELIST}?status__exact=submitted">2 requests waiting</a>' in content


def test_the_count_costs_one_query(admin_client: Client, ca: CertificateAuthority, alice: User) -> None:
    submit(alice)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(reverse("admin:auth_user_changelist"))
    counting = [q["sql"] for q in queries if "enroll_enrollmentrequest" in q["sql"]]
    assert len(counting) == 1
    assert "COUNT(" in counting[0].upper()


def test_an_empty_queue_says_so(admin_client: Client, ca: CertificateAuthority) -> None:
    assert "No request waiting" in admin_client.get(reverse("admin:index")).content.decode()


def test_staff_who_may_not_see_requests_get_no_count(ca: CertificateAuthority, alice: User) -> None:
    submit(alice)
    client = Client()
    client.force_login(staff("gina", "view_user"))
    content = client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert "waiting" not in content
    looker = Client()
    looker.force_login(staff("hal", "view_enrollmentrequest"))
    assert "1 request waiting" in looker.get(reverse("admin:index")).content.decode()


def test_the_index_lists_the_enrollment_app_first_and_the_queue(
    admin_client: Client, ca: CertificateAuthority, alice: User
) -> None:
    submit(alice)
    content = admin_client.get(reverse("admin:index")).content.decode()
    assert content.index('class="app-enroll') < content.index('class="app-auth')
    assert content.index('class="app-enroll') < content.index('class="app-ca')
    assert "1 request waiting</strong> for a decision" in content


# --- the list: Submitted, oldest first -----------------------------------------------------------------


def test_the_list_opens_on_submitted_requests_oldest_first(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    newer = submit(alice, hours_ago=1)
    oldest = submit(bob, hours_ago=5)
    middle = submit(alice, hours_ago=3)
    rejected = submit(bob, hours_ago=9)
    flows.reject(request_id=rejected.pk, reason="no", by=None)
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert listed(response) == [oldest.pk, middle.pk, newer.pk]
    status_filter = response.context["cl"].filter_specs[0]
    selected = [c["display"] for c in status_filter.choices(response.context["cl"]) if c["selected"]]
    assert selected == ["Submitted"]


def test_the_approver_can_still_choose_all_or_another_status_newest_first(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    older = submit(alice, hours_ago=5)
    newer = submit(bob, hours_ago=1)
    flows.reject(request_id=older.pk, reason="no", by=None)
    assert listed(admin_client.get(CHANGELIST, {"status__exact": "all"})) == [newer.pk, older.pk]
    assert listed(admin_client.get(CHANGELIST, {"status__exact": "rejected"})) == [older.pk]
    assert listed(admin_client.get(CHANGELIST, {"q": "alice"})) == [older.pk]  # a search spans every status


def test_a_column_sort_chosen_by_the_approver_wins(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    older = submit(alice, hours_ago=5)
    newer = submit(bob, hours_ago=1)
    assert listed(admin_client.get(CHANGELIST, {"o": "-1"})) == [newer.pk, older.pk]  # by id, descending


# --- the context columns -------------------------------------------------------------------------------


def test_the_list_shows_account_age_verified_address_and_renewal(
    admin_client: Client, ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    unverified = User.objects.create_user("ivan", "ivan@example.com", "pw-123456789")
    User.objects.filter(pk=unverified.pk).update(date_joined=utcnow() - dt.timedelta(days=40))
    certificate = issue_for(alice)
    renewal = flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())
    submit(unverified)
    content = admin_client.get(CHANGELIST).content.decode()
    assert "\u2713 alice@example.com" in content
    assert "\u2717 not verified" in content
    assert "1\xa0month" in content  # ivan's account age
    assert reverse("admin:ca_certificate_change", args=[certificate.pk]) in content
    assert renewal.status == RequestStatus.SUBMITTED


def test_key_seen_before_tells_own_certificate_other_account_blocked_and_new(
    ca: CertificateAuthority, alice: User, bob: User, issue_for: Callable[..., Certificate]
) -> None:
    own_key, shared_key, blocked_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    issue_for(alice, make_csr(own_key))
    others = submit(alice, csr=make_csr(shared_key))  # before bob's certificate (then it is refused)
    issue_for(bob, make_csr(shared_key))
    again = submit(alice, csr=make_csr(own_key))
    blocked = submit(alice, csr=make_csr(blocked_key))
    new = submit(alice)
    BlockedKey.objects.create(
        spki_sha256=blocked.spki_sha256, source=BlockedKeySource.OPERATOR, created_at=utcnow()
    )
    issued = EnrollmentRequest.objects.get(certificate__owner=bob)  # its own certificate is not "before"
    contexts = row_contexts(list(EnrollmentRequest.objects.select_related("owner")))
    assert contexts[again.pk].key_seen[0] == "own earlier certificate"
    assert contexts[others.pk].key_seen[0] == "another account's certificate"
    assert contexts[blocked.pk].key_seen[0] == "blocked key"
    assert contexts[new.pk].key_seen[0] == "new key"
    assert contexts[issued.pk].key_seen[0] == "new key"


def test_the_context_columns_cost_the_same_queries_for_two_rows_or_twelve(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    def queries_for_the_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(queries)

    submit(alice)
    submit(bob)
    few = queries_for_the_list()
    for number in range(10):
        owner = User.objects.create_user(f"user{number}", f"user{number}@example.com", "pw-123456789")
        submit(owner)
    assert queries_for_the_list() == few


@pytest.mark.parametrize(
    ("hours", "colour", "words"),
    [(0, "green", "on time"), (11.9, "green", "on time"), (12, "amber", "due soon"), (24, "red", "overdue")],
)
def test_time_waiting_is_coloured_against_the_service_level_with_words(
    hours: float, colour: str, words: str
) -> None:
    assert waiting_colour(dt.timedelta(hours=hours), hours=24) == (colour, words)


def test_the_list_shows_how_long_each_request_has_waited(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    submit(alice, hours_ago=30)
    submit(bob, hours_ago=1)
    content = admin_client.get(CHANGELIST).content.decode()
    assert "enroll-badge-red" in content
    assert "overdue" in content
    assert "1\xa0hour, on time" in content


# --- a request's page: deciding and going on -----------------------------------------------------------


def test_approve_and_next_issues_logs_and_opens_the_oldest_waiting_request_not_ones_own(
    admin_client: Client, admin_user: User, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    first = submit(alice, hours_ago=5)
    submit(admin_user, hours_ago=4)  # the approver's own: skipped
    second = submit(bob, hours_ago=2)
    response = admin_client.post(reverse(APPROVE, args=[first.pk]), {"_next": "1"})
    assert response.status_code == 302
    assert response["Location"] == change_url(second)
    first.refresh_from_db()
    assert first.status == RequestStatus.ISSUED
    assert first.certificate is not None
    logged = LogEntry.objects.filter(object_id=str(first.pk), content_type__model="enrollmentrequest")
    assert [entry.change_message for entry in logged] == [
        f"Approved: certificate {first.certificate.serial}."
    ]
    assert logged[0].user == admin_user


def test_reject_and_next_needs_a_reason_and_keeps_going_on_after_the_error(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    first = submit(alice, hours_ago=5)
    second = submit(bob, hours_ago=2)
    refused = admin_client.post(reverse(REJECT, args=[first.pk]), {"_next": "1", "reason": " "})
    assert refused.status_code == 200
    content = refused.content.decode()
    assert "Give a reason for the rejection" in content
    assert '<input type="hidden" name="_next" value="1">' in content
    first.refresh_from_db()
    assert first.status == RequestStatus.SUBMITTED
    response = admin_client.post(reverse(REJECT, args=[first.pk]), {"_next": "1", "reason": "Unknown device"})
    assert response["Location"] == change_url(second)
    first.refresh_from_db()
    assert (first.status, first.reason) == (RequestStatus.REJECTED, "Unknown device")
    assert LogEntry.objects.filter(
        object_id=str(first.pk), change_message="Rejected: Unknown device"
    ).exists()


def test_the_last_decision_goes_back_to_the_list_saying_the_queue_is_empty(
    admin_client: Client, admin_user: User, ca: CertificateAuthority, alice: User
) -> None:
    last = submit(alice)
    submit(admin_user)
    response = admin_client.post(reverse(APPROVE, args=[last.pk]), {"_next": "1"})
    assert response["Location"] == f"{CHANGELIST}?status__exact=submitted"
    assert any("The queue is empty" in m and "1 request of yours wait" in m for m in messages_of(response))


def test_the_plain_buttons_still_stay_on_the_request(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    first = submit(alice, hours_ago=5)
    submit(bob)
    assert admin_client.post(reverse(APPROVE, args=[first.pk]))["Location"] == change_url(first)


def test_the_request_page_offers_the_queue_buttons_shortcuts_and_neighbours(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    first = submit(alice, hours_ago=5)
    middle = submit(bob, hours_ago=3)
    last = submit(alice, hours_ago=1)
    content = admin_client.get(change_url(middle)).content.decode()
    assert "Approve and next" in content
    assert "Reject and next" in content
    assert 'name="reason"' in content
    assert "required" in content
    assert "portal/queue-keys.js" in content
    assert "<kbd>a</kbd> approve and next" in content
    assert f'href="{change_url(first)}" id="enroll-previous" data-shortcut="k"' in content
    assert f'href="{change_url(last)}" id="enroll-next" data-shortcut="j"' in content
    assert "3 waiting for you" in content


def test_the_request_page_lists_the_owners_other_requests_and_certificates(
    admin_client: Client, ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)
    rejected = submit(alice)
    flows.reject(request_id=rejected.pk, reason="Not this laptop", by=None)
    current = submit(alice)
    content = admin_client.get(change_url(current)).content.decode()
    assert "Other requests and certificates of alice" in content
    assert f'href="{change_url(rejected)}">#{rejected.pk}</a>' in content
    assert "Not this laptop" in content
    assert reverse("admin:ca_certificate_change", args=[certificate.pk]) in content
    assert certificate.serial in content
    assert f">#{current.pk}</a>" not in content.split("Other requests and certificates")[1]


def test_the_list_scrolls_in_a_region_the_keyboard_reaches_and_its_total_opens_every_status(
    admin_client: Client, ca: CertificateAuthority, alice: User
) -> None:
    submit(alice)
    flows.reject(request_id=submit(alice).pk, reason="no", by=None)
    content = admin_client.get(CHANGELIST).content.decode()
    region = '<div class="results" tabindex="0" role="region" aria-label="Enrollment requests: the list'
    assert region in content
    assert '<span class="enroll-search-label">Find</span></label>' in content
    assert '1 result (<a href="?status__exact=all">2 total</a>)' in content


def test_the_list_and_the_request_page_show_the_device_name_and_search_finds_it(
    admin_client: Client, ca: CertificateAuthority, alice: User, bob: User
) -> None:
    laptop = flows.submit_csr(owner=alice, data=make_csr(), device_name="Work laptop")
    flows.submit_csr(owner=bob, data=make_csr())
    assert "Work laptop" in admin_client.get(CHANGELIST).content.decode()
    assert listed(admin_client.get(CHANGELIST, {"q": "laptop"})) == [laptop.pk]
    assert "Work laptop" in admin_client.get(change_url(laptop)).content.decode()


def test_the_colours_follow_the_service_level_setting(
    admin_client: Client, ca: CertificateAuthority, alice: User, settings: Settings
) -> None:
    settings.ENROLL_APPROVAL_SERVICE_HOURS = 2
    submit(alice, hours_ago=3)
    content = admin_client.get(CHANGELIST).content.decode()
    assert "3\xa0hours, overdue" in content
    assert "enroll-badge-red" in content
