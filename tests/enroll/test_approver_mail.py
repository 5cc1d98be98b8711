"""Approvers are told: one mail per new request or an hourly digest (site setting, per-user choice), and
one reminder past the service level; only approvers, never about their own request, only to verified
addresses, and never from inside the submitter's transaction."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.models import Group, Permission, User
from django.core import mail
from django.core.management import call_command
from django.db import transaction
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from accounts.models import ApproverMail, Profile
from accounts.services import mark_email_verified
from enroll import admin as enroll_admin
from enroll import approver_mail, flows
from enroll.models import ApproverNotice, ApproverNoticeKind, EnrollmentRequest
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2031, 3, 3, 9, 0, 0, tzinfo=dt.UTC)
ADMIN_PAGE = "http://pki.example.test/admin/enroll/enrollmentrequest/{pk}/change/"

Submit = Callable[..., EnrollmentRequest]
Run = Callable[[], str]


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _site_default(settings: Settings) -> None:
    settings.ENROLL_APPROVER_MAIL = "each"
    settings.ENROLL_APPROVAL_SERVICE_HOURS = 24


def make_user(name: str, *, verified: bool = True, **flags: bool) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", f"{name}-password-123", **flags)
    if verified:
        mark_email_verified(user)
    return user


def grant_decide(user: User) -> User:
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    return User.objects.get(pk=user.pk)  # a fresh instance: no cached permissions


@pytest.fixture
def carol(clock: time_machine.Traveller) -> User:
    """Staff with the permission to decide requests, verified address."""
    return grant_decide(make_user("carol", is_staff=True))


@pytest.fixture
def dave(clock: time_machine.Traveller) -> User:
    """A superuser (so an approver), verified address."""
    return make_user("dave", is_staff=True, is_superuser=True)


def choose(user: User, choice: ApproverMail) -> None:
    Profile.objects.update_or_create(user=user, defaults={"approver_mail": choice})


@pytest.fixture
def submit(django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks) -> Submit:
    """Submit a CSR as the portal does; what waits for the commit runs when it commits."""

    def submit_as(owner: User, **kwargs: object) -> EnrollmentRequest:
        with django_capture_on_commit_callbacks(execute=True):
            return flows.submit_csr(owner=owner, data=make_csr(), **kwargs)  # type: ignore[arg-type]

    return submit_as


@pytest.fixture
def run(django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks) -> Run:
    """manage.py notify_approvers, as cron runs it."""

    def run_command() -> str:
        out = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("notify_approvers", stdout=out)
        return out.getvalue().strip()

    return run_command


def recipients() -> list[str]:
    return sorted(address for message in mail.outbox for address in message.to)


# --- one mail per new request -----------------------------------------------------------------------


def test_each_approver_gets_one_mail_about_a_new_request_with_what_it_is_and_a_link_to_decide_it(
    carol: User, dave: User, alice: User, submit: Submit
) -> None:
    request = submit(alice, device_name="work laptop")

    assert recipients() == ["carol@example.com", "dave@example.com"]
    message = mail.outbox[0]
    assert message.subject == f"Request #{request.pk} from alice waits for your decision"
    assert ADMIN_PAGE.format(pk=request.pk) in message.body
    assert "From:      alice" in message.body
    assert "Kind:      PKCS#10 CSR" in message.body
    assert "Key:       ECDSA P-256" in message.body
    assert "Device:    work laptop" in message.body
    assert "Submitted: 2031-03-03 09:00 UTC (waiting less than a minute)" in message.body
    assert "http://pki.example.test/accounts/profile/" in message.body


def test_a_request_without_a_device_name_says_none(carol: User, alice: User, submit: Submit) -> None:
    submit(alice)

    assert "Device:" not in mail.outbox[0].body


def test_nothing_is_sent_inside_the_submitters_transaction_only_after_it_commits(
    carol: User, alice: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request = flows.submit_csr(owner=alice, data=make_csr())
        assert mail.outbox == []
        assert not ApproverNotice.objects.exists()

    assert mail.outbox == []
    with django_capture_on_commit_callbacks(execute=True):  # the commit (and the task's own commit)
        for callback in callbacks:
            callback()
    assert recipients() == ["carol@example.com"]
    assert ApproverNotice.objects.get().request == request


def test_a_submission_that_is_rolled_back_tells_nobody(
    carol: User, alice: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    class Undo(Exception):
        pass

    def submit_then_fail() -> None:
        with transaction.atomic():
            flows.submit_csr(owner=alice, data=make_csr())
            raise Undo

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Undo):
        submit_then_fail()

    assert mail.outbox == []


def test_only_active_staff_who_may_decide_are_told(
    carol: User, alice: User, bob: User, submit: Submit, clock: time_machine.Traveller
) -> None:
    make_user("staff-only", is_staff=True)  # staff without the permission
    grant_decide(make_user("not-staff"))  # the permission, but no admin access
    make_user("gone", is_staff=True, is_superuser=True, is_active=False)
    grant_decide(make_user("gone-too", is_staff=True, is_active=False))

    submit(alice)

    assert recipients() == ["carol@example.com"]


def test_the_permission_through_a_group_makes_an_approver(alice: User, submit: Submit) -> None:
    approvers = Group.objects.create(name="approvers")
    approvers.permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    erin = make_user("erin", is_staff=True)
    erin.groups.add(approvers)

    submit(alice)

    assert recipients() == ["erin@example.com"]


def test_an_approver_is_not_told_about_their_own_request(carol: User, dave: User, submit: Submit) -> None:
    submit(carol)

    assert recipients() == ["dave@example.com"]


def test_an_approver_without_a_verified_address_gets_nothing(
    carol: User, alice: User, submit: Submit, clock: time_machine.Traveller
) -> None:
    make_user("frank", verified=False, is_staff=True, is_superuser=True)
    changed = grant_decide(make_user("grace", is_staff=True))
    changed.email = "grace-new@example.com"  # changed since it was verified
    changed.save()

    submit(alice)

    assert recipients() == ["carol@example.com"]


def test_the_mail_permission_is_the_admins(carol: User) -> None:
    assert approver_mail.DECIDE_PERMISSION == enroll_admin.DECIDE_PERMISSION


# --- the site's setting and each approver's choice -------------------------------------------------


def test_with_the_site_setting_off_nobody_is_told_unless_they_chose_so(
    carol: User, dave: User, alice: User, submit: Submit, settings: Settings
) -> None:
    settings.ENROLL_APPROVER_MAIL = "off"
    choose(dave, ApproverMail.EACH)

    submit(alice)

    assert recipients() == ["dave@example.com"]


def test_an_approver_who_chose_none_gets_nothing(
    carol: User, dave: User, alice: User, submit: Submit
) -> None:
    choose(carol, ApproverMail.NONE)

    submit(alice)

    assert recipients() == ["dave@example.com"]


def test_with_the_site_setting_digest_a_submission_mails_nobody_and_the_command_sends_one_list(
    carol: User,
    dave: User,
    alice: User,
    bob: User,
    submit: Submit,
    run: Run,
    settings: Settings,
    clock: time_machine.Traveller,
) -> None:
    settings.ENROLL_APPROVER_MAIL = "digest"
    first = submit(alice, device_name="phone")
    clock.shift(dt.timedelta(minutes=20))
    second = submit(bob)
    assert mail.outbox == []
    clock.shift(dt.timedelta(minutes=40))

    assert run() == "sent 2 digests and 0 reminders to approvers"

    assert recipients() == ["carol@example.com", "dave@example.com"]
    digest = mail.outbox[0]
    assert digest.subject == "2 new requests wait for your decision"
    assert f'#{first.pk} from alice: PKCS#10 CSR, ECDSA P-256, device "phone"' in digest.body
    assert "submitted 2031-03-03 09:00 UTC, waiting 1 hour" in digest.body
    assert f"#{second.pk} from bob" in digest.body
    assert "waiting 40 minutes" in digest.body
    assert ADMIN_PAGE.format(pk=first.pk) in digest.body
    assert ADMIN_PAGE.format(pk=second.pk) in digest.body


def test_each_request_is_in_one_digest_per_approver(
    carol: User, alice: User, bob: User, submit: Submit, run: Run, settings: Settings
) -> None:
    settings.ENROLL_APPROVER_MAIL = "digest"
    first = submit(alice)
    run()
    mail.outbox.clear()

    assert run() == "sent 0 digests and 0 reminders to approvers"
    second = submit(bob)
    assert run() == "sent 1 digest and 0 reminders to approvers"

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "1 new request waits for your decision"
    assert f"#{second.pk} from bob" in mail.outbox[0].body
    assert f"#{first.pk} " not in mail.outbox[0].body


def test_a_digest_leaves_out_the_approvers_own_requests_and_decided_ones(
    carol: User, dave: User, alice: User, submit: Submit, run: Run, settings: Settings
) -> None:
    settings.ENROLL_APPROVER_MAIL = "digest"
    submit(carol)
    rejected = submit(alice)
    flows.reject(request_id=rejected.pk, reason="Use your work account.", by=dave)
    mail.outbox.clear()

    assert run() == "sent 1 digest and 0 reminders to approvers"

    assert recipients() == ["dave@example.com"]  # carol's own request was the only one waiting


def test_each_approvers_choice_overrides_the_site_setting(
    carol: User, dave: User, alice: User, submit: Submit, run: Run
) -> None:
    choose(carol, ApproverMail.DIGEST)  # the site says each

    submit(alice)
    assert recipients() == ["dave@example.com"]
    mail.outbox.clear()

    run()
    assert recipients() == ["carol@example.com"]
    assert mail.outbox[0].subject == "1 new request waits for your decision"


def test_a_request_mailed_on_its_own_is_not_listed_again_after_switching_to_the_digest(
    carol: User, alice: User, submit: Submit, run: Run
) -> None:
    submit(alice)
    choose(carol, ApproverMail.DIGEST)

    assert run() == "sent 0 digests and 0 reminders to approvers"
    assert len(mail.outbox) == 1


def test_an_automatically_approved_renewal_needs_no_approver(
    carol: User, alice: User, submit: Submit, settings: Settings, issue_for: Callable[..., object], ca: object
) -> None:
    certificate = issue_for(alice)
    mail.outbox.clear()
    settings.ENROLL_AUTO_APPROVE_RENEWALS = True

    renewal = submit(alice, renewal_of=certificate, require_verified_email=True)

    assert renewal.status == "issued"
    assert [m for m in mail.outbox if m.to == ["carol@example.com"]] == []


# --- reminders past the service level --------------------------------------------------------------


def test_a_request_waiting_past_the_service_level_is_reminded_once(
    carol: User, dave: User, alice: User, submit: Submit, run: Run, clock: time_machine.Traveller
) -> None:
    request = submit(alice, device_name="tablet")
    mail.outbox.clear()

    clock.shift(dt.timedelta(hours=23, minutes=59))
    assert run() == "sent 0 digests and 0 reminders to approvers"
    clock.shift(dt.timedelta(minutes=1))
    assert run() == "sent 0 digests and 2 reminders to approvers"
    clock.shift(dt.timedelta(hours=5))
    assert run() == "sent 0 digests and 0 reminders to approvers"

    assert recipients() == ["carol@example.com", "dave@example.com"]
    reminder = mail.outbox[0]
    assert reminder.subject == "Reminder: 1 request waited more than 24 hours for a decision"
    assert f'#{request.pk} from alice: PKCS#10 CSR, ECDSA P-256, device "tablet"' in reminder.body
    assert "waiting 1 day" in reminder.body
    assert ADMIN_PAGE.format(pk=request.pk) in reminder.body
    assert ApproverNotice.objects.filter(kind=ApproverNoticeKind.OVERDUE).count() == 2


def test_the_reminder_lists_every_overdue_request_in_one_mail_and_follows_the_setting(
    carol: User,
    alice: User,
    bob: User,
    submit: Submit,
    run: Run,
    clock: time_machine.Traveller,
    settings: Settings,
) -> None:
    settings.ENROLL_APPROVAL_SERVICE_HOURS = 2
    first = submit(alice)
    clock.shift(dt.timedelta(minutes=30))
    second = submit(bob)
    mail.outbox.clear()

    clock.shift(dt.timedelta(hours=2))
    assert run() == "sent 0 digests and 1 reminder to approvers"

    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    assert mail.outbox[0].subject == "Reminder: 2 requests waited more than 2 hours for a decision"
    assert f"#{first.pk} from alice" in body
    assert f"#{second.pk} from bob" in body
    assert "waiting 2 hours" in body


def test_no_reminder_for_a_decided_request_nor_for_an_approver_who_chose_none(
    carol: User, dave: User, alice: User, bob: User, submit: Submit, run: Run, clock: time_machine.Traveller
) -> None:
    decided = submit(alice)
    waiting = submit(bob)
    flows.reject(request_id=decided.pk, reason="Ask your team lead first.", by=dave)
    choose(carol, ApproverMail.NONE)
    mail.outbox.clear()

    clock.shift(dt.timedelta(hours=25))
    assert run() == "sent 0 digests and 1 reminder to approvers"

    assert recipients() == ["dave@example.com"]
    assert f"#{waiting.pk} from bob" in mail.outbox[0].body
    assert f"#{decided.pk} " not in mail.outbox[0].body


def test_digest_approvers_get_reminders_too_but_never_about_their_own_request(
    carol: User, dave: User, submit: Submit, run: Run, clock: time_machine.Traveller, settings: Settings
) -> None:
    settings.ENROLL_APPROVER_MAIL = "digest"
    submit(carol)
    run()
    mail.outbox.clear()

    clock.shift(dt.timedelta(hours=24))
    assert run() == "sent 0 digests and 1 reminder to approvers"
    assert recipients() == ["dave@example.com"]


def test_a_concurrent_run_that_told_the_approver_first_makes_this_one_send_nothing(
    carol: User, alice: User, submit: Submit
) -> None:
    choose(carol, ApproverMail.DIGEST)
    request = submit(alice)
    approver = approver_mail.mailed_approvers()[0]
    ApproverNotice.objects.create(request=request, approver=carol, kind=ApproverNoticeKind.NEW, sent_at=T0)

    sent = approver_mail._record_and_send(
        "approver_digest",
        approver=approver,
        requests=[request],
        kind=ApproverNoticeKind.NEW,
        now=T0,
        context={"requests": []},
    )

    assert sent is False
    assert mail.outbox == []
    assert ApproverNotice.objects.count() == 1


# --- the settings -----------------------------------------------------------------------------------


def settings_of(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.ENROLL_APPROVER_MAIL, settings.ENROLL_APPROVAL_SERVICE_HOURS)"
    )
    keep = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **keep,
            "DJANGO_SETTINGS_MODULE": "enroll.settings",
            "DJANGO_DEBUG": "true",
            "ENROLL_DATA_DIR": str(tmp_path),
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_settings_default_to_each_mail_and_24_hours_and_take_the_environment(tmp_path: Path) -> None:
    assert settings_of(tmp_path).stdout.split() == ["each", "24"]
    chosen = settings_of(tmp_path, ENROLL_APPROVER_MAIL="Digest", ENROLL_APPROVAL_SERVICE_HOURS="8")
    assert chosen.stdout.split() == ["digest", "8"]


def test_a_wrong_approver_mail_setting_stops_the_start_and_says_the_choices(tmp_path: Path) -> None:
    done = settings_of(tmp_path, ENROLL_APPROVER_MAIL="hourly")

    assert done.returncode != 0
    assert "ENROLL_APPROVER_MAIL='hourly' is not a choice: use each, digest or off." in done.stderr


# --- words ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waited", "words"),
    [
        (dt.timedelta(seconds=59), "less than a minute"),
        (dt.timedelta(minutes=1), "1 minute"),
        (dt.timedelta(minutes=59, seconds=59), "59 minutes"),
        (dt.timedelta(hours=1), "1 hour"),
        (dt.timedelta(hours=23, minutes=59), "23 hours"),
        (dt.timedelta(hours=24), "1 day"),
        (dt.timedelta(hours=50), "2 days 2 hours"),
        (dt.timedelta(days=3, hours=1), "3 days 1 hour"),
        (dt.timedelta(seconds=-5), "less than a minute"),
    ],
)
def test_waiting_times_read_as_words(waited: dt.timedelta, words: str) -> None:
    assert approver_mail.waited_words(waited) == words
