"""Mails go out in the recipient's language (Profile.language), whatever the language of the page or
command that caused them: the owner's decisions and reminders, the account mails, and the approvers'."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.utils import translation
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from accounts import services
from accounts.models import Profile
from ca.models import Certificate, CertificateAuthority
from enroll import flows, notifications
from tests.conftest import make_csr

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("german")]


def speaks(user: User, language: str) -> None:
    Profile.objects.update_or_create(user=user, defaults={"language": language})


def test_a_verification_link_goes_out_in_the_persons_language(alice: User, bob: User) -> None:
    speaks(alice, "de")
    now = dt.datetime(2031, 3, 3, 9, 0, tzinfo=dt.UTC)
    with translation.override("en"):  # the page that sends it is English
        services.send_verification_email(alice, now=now)
    with translation.override("de"):  # and this one German
        services.send_verification_email(bob, now=now)

    german, english = mail.outbox
    assert german.subject == "Bestätigen Sie Ihre E-Mail-Adresse für das Zertifikatsportal"
    assert "Der Link funktioniert 48 Stunden lang, bis 5. März 2031, 09:00 UTC." in german.body
    assert english.subject == "Confirm your e-mail address for the certificate portal"
    assert "The link works for 48 hours, until 5 March 2031, 09:00 UTC." in english.body


def test_the_password_reset_mail_is_in_the_persons_language(alice: User) -> None:
    speaks(alice, "de")
    assert services.mail_password_reset.call("alice@example.com") == 1

    (message,) = mail.outbox
    assert message.subject == "Setzen Sie Ihr Passwort für das Zertifikatsportal zurück"
    assert "Der Link funktioniert einmal, " in message.body


def test_a_decision_goes_to_a_german_owner_in_german_and_an_english_one_in_english(
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: Callable[..., Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    speaks(alice, "de")
    with translation.override("en"), django_capture_on_commit_callbacks(execute=True):
        issue_for(alice)
    with translation.override("de"), django_capture_on_commit_callbacks(execute=True):
        issue_for(bob)

    german, english = (m for m in mail.outbox if "#" in m.subject)
    assert german.to == ["alice@example.com"]
    assert german.subject.startswith("Ihr Zertifikat ist fertig (Anforderung #")
    assert "  Seriennummer: " in german.body
    assert "Ihr privater Schlüssel hat Ihren Computer nie verlassen" in german.body
    assert "-- \nEnroll, Client-Zertifikate\n" in german.body
    assert english.to == ["bob@example.com"]
    assert english.subject.startswith("Your certificate is ready (request #")
    assert "  Serial:      " in english.body


def test_an_expiry_reminder_counts_the_days_in_the_owners_language(
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    speaks(alice, "de")
    certificate = issue_for(alice)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        notifications.send_expiry_reminders(now=certificate.not_after - dt.timedelta(days=6, hours=1))

    (message,) = mail.outbox
    assert message.subject == "Ihr Client-Zertifikat läuft in 6 Tagen ab"
    assert "  Gültig bis:   " in message.body


def test_approvers_get_new_requests_each_in_their_own_language(
    settings: Settings,
    alice: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.ENROLL_APPROVER_MAIL = "each"
    permission = Permission.objects.get(codename="change_enrollmentrequest")
    approvers = {}
    for name, language in (("jana", "de"), ("jack", "en"), ("jo", "")):
        user = User.objects.create_user(name, f"{name}@example.com", "x-password-123", is_staff=True)
        user.user_permissions.add(permission)
        services.mark_email_verified(user)
        speaks(user, language)
        approvers[f"{name}@example.com"] = user
    speaks(alice, "de")  # the submitter's language is not the approvers'

    with translation.override("de"), django_capture_on_commit_callbacks(execute=True):
        request = flows.submit_csr(owner=alice, data=make_csr())

    by_address = {message.to[0]: message for message in mail.outbox}
    assert set(by_address) == set(approvers)
    german = by_address["jana@example.com"]
    assert german.subject == f"Anforderung #{request.pk} von alice wartet auf Ihre Entscheidung"
    assert "  Von:         alice" in german.body
    assert "(Wartezeit weniger als eine Minute)" in german.body
    for address in ("jack@example.com", "jo@example.com"):  # English, and the site's language (English)
        english = by_address[address]
        assert english.subject == f"Request #{request.pk} from alice waits for your decision"
        assert "(waiting less than a minute)" in english.body


@pytest.mark.parametrize(
    ("language", "minutes", "words"),
    [
        ("en", 0, "less than a minute"),
        ("en", 1, "1 minute"),
        ("en", 150, "2 hours"),
        ("en", 60 * 49, "2 days 1 hour"),
        ("de", 0, "weniger als eine Minute"),
        ("de", 1, "1 Minute"),
        ("de", 12, "12 Minuten"),
        ("de", 60, "1 Stunde"),
        ("de", 60 * 24, "1 Tag"),
        ("de", 60 * 51, "2 Tage 3 Stunden"),
    ],
)
def test_waiting_times_are_written_in_the_active_language(language: str, minutes: int, words: str) -> None:
    from enroll.approver_mail import waited_words

    with translation.override(language):
        assert waited_words(dt.timedelta(minutes=minutes)) == words


@pytest.mark.parametrize(
    ("reason", "english", "german"),
    [
        ("ca_compromise", "ca compromise", "CA kompromittiert"),
        ("key_compromise", "key compromise", "Schlüssel kompromittiert"),
        ("superseded", "superseded", "ersetzt"),
        ("cessation_of_operation", "cessation of operation", "Betrieb eingestellt"),
        ("", "", ""),
    ],
)
def test_revocation_reasons_are_written_in_the_active_language(
    reason: str, english: str, german: str
) -> None:
    with translation.override("en"):
        assert notifications.reason_words(reason) == english
    with translation.override("de"):
        assert notifications.reason_words(reason) == german
