"""manage.py notify_expiring: reminders 30, 7 and 1 days before expiry, each once, safe to run hourly."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.revocation import revoke_certificate
from enroll import flows, notifications
from enroll.models import ExpiryReminder
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2031, 1, 10, 9, 30, 0, tzinfo=dt.UTC)

IssueFor = Callable[..., Certificate]


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def certificate(
    clock: time_machine.Traveller, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> Certificate:
    return issue_for(alice)


@pytest.fixture
def run(django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks) -> Callable[[], str]:
    """Run the command as cron would; each reminder's e-mail goes out as its transaction commits."""

    def run_command() -> str:
        out = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("notify_expiring", stdout=out)
        return out.getvalue().strip()

    return run_command


def before_expiry(certificate: Certificate, **delta: float) -> dt.datetime:
    return certificate.not_after - dt.timedelta(**delta)


def test_nothing_is_sent_more_than_30_days_before_expiry(
    clock: time_machine.Traveller, certificate: Certificate, run: Callable[[], str]
) -> None:
    clock.move_to(before_expiry(certificate, days=30, seconds=1))

    assert run() == "sent 0 expiry reminders"
    assert mail.outbox == []


def test_the_30_day_reminder_goes_out_once_however_often_it_runs(
    clock: time_machine.Traveller, certificate: Certificate, run: Callable[[], str]
) -> None:
    clock.move_to(before_expiry(certificate, days=30))

    first = run()
    second = run()

    assert first == "sent 1 expiry reminder"
    assert second == "sent 0 expiry reminders"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == "Your client certificate expires in 30 days"
    assert f"http://pki.example.test/certificates/{certificate.pk}/renew/" in message.body
    assert certificate.serial in message.body
    assert f"{certificate.not_after:%Y-%m-%d %H:%M} UTC" in message.body
    assert list(ExpiryReminder.objects.values_list("days", flat=True)) == [30]


def test_run_hourly_over_the_last_month_it_sends_exactly_three_reminders(
    clock: time_machine.Traveller, certificate: Certificate
) -> None:
    when = before_expiry(certificate, days=31)
    while when < certificate.not_after + dt.timedelta(hours=2):
        clock.move_to(when)
        notifications.send_expiry_reminders()
        when += dt.timedelta(hours=1)

    reminders = {r.days: r.sent_at for r in ExpiryReminder.objects.filter(certificate=certificate)}
    assert set(reminders) == {30, 7, 1}
    for days, sent_at in reminders.items():
        due = before_expiry(certificate, days=days)
        assert due <= sent_at < due + dt.timedelta(hours=1)


@pytest.mark.parametrize(("days_left", "expected"), [(29, 30), (7, 7), (6.5, 7), (1, 1), (0.25, 1)])
def test_each_threshold_sends_its_reminder(
    clock: time_machine.Traveller,
    certificate: Certificate,
    run: Callable[[], str],
    days_left: float,
    expected: int,
) -> None:
    clock.move_to(before_expiry(certificate, days=days_left))

    assert run() == "sent 1 expiry reminder"
    assert list(ExpiryReminder.objects.values_list("days", flat=True)) == [expected]
    assert len(mail.outbox) == 1


def test_a_late_first_run_sends_only_the_nearest_reminder_and_then_the_next(
    clock: time_machine.Traveller, certificate: Certificate, run: Callable[[], str]
) -> None:
    clock.move_to(before_expiry(certificate, days=5))
    run()
    run()
    clock.move_to(before_expiry(certificate, hours=12))
    run()
    run()

    assert sorted(ExpiryReminder.objects.values_list("days", flat=True)) == [1, 7]
    assert [m.subject for m in mail.outbox] == [
        "Your client certificate expires in 5 days",
        "Your client certificate expires in less than a day",
    ]


def test_no_reminder_for_a_revoked_certificate(
    clock: time_machine.Traveller, certificate: Certificate, run: Callable[[], str]
) -> None:
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    clock.move_to(before_expiry(certificate, days=3))

    assert run() == "sent 0 expiry reminders"
    assert mail.outbox == []


def test_no_reminder_for_an_expired_certificate(
    clock: time_machine.Traveller, certificate: Certificate, run: Callable[[], str]
) -> None:
    clock.move_to(certificate.not_after + dt.timedelta(minutes=1))

    assert run() == "sent 0 expiry reminders"


@pytest.mark.parametrize("decision", ["pending", "issued"])
def test_no_reminder_for_a_renewed_certificate(
    clock: time_machine.Traveller,
    certificate: Certificate,
    alice: User,
    admin_user: User,
    run: Callable[[], str],
    decision: str,
) -> None:
    clock.move_to(before_expiry(certificate, days=40))
    renewal = flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())
    if decision == "issued":
        flows.approve(request_id=renewal.pk, by=admin_user)
    clock.move_to(before_expiry(certificate, days=7))

    assert run() == "sent 0 expiry reminders"
    assert mail.outbox == []
    assert not ExpiryReminder.objects.exists()


def test_a_rejected_renewal_does_not_stop_the_reminders(
    clock: time_machine.Traveller,
    certificate: Certificate,
    alice: User,
    admin_user: User,
    run: Callable[[], str],
) -> None:
    renewal = flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())
    flows.reject(request_id=renewal.pk, reason="Wrong key", by=admin_user)
    clock.move_to(before_expiry(certificate, days=7))

    assert run() == "sent 1 expiry reminder"


def test_no_reminder_without_a_verified_address(
    clock: time_machine.Traveller, certificate: Certificate, alice: User, run: Callable[[], str]
) -> None:
    alice.email = "alice@changed.example"
    alice.save()
    clock.move_to(before_expiry(certificate, days=7))

    assert run() == "sent 0 expiry reminders"
    assert not ExpiryReminder.objects.exists()


def test_a_reminder_another_run_recorded_meanwhile_is_not_sent_twice(
    clock: time_machine.Traveller,
    certificate: Certificate,
    run: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.move_to(before_expiry(certificate, days=7))
    run()
    monkeypatch.setattr(notifications, "already_reminded", lambda certificate, threshold: False)

    assert run() == "sent 0 expiry reminders", "the unique constraint stops the second one"
    assert len(mail.outbox) == 1
    assert ExpiryReminder.objects.count() == 1


def test_each_certificate_gets_its_own_reminder(
    clock: time_machine.Traveller,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: IssueFor,
    run: Callable[[], str],
) -> None:
    alices = issue_for(alice)
    bobs = issue_for(bob)
    clock.move_to(before_expiry(alices, days=1))

    assert run() == "sent 2 expiry reminders"
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com", "bob@example.com"]
    assert ExpiryReminder.objects.filter(certificate__in=[alices, bobs], days=1).count() == 2
