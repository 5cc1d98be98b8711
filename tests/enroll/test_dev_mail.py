"""Development mail (enroll.devmail): in DEBUG every message is printed and kept, and /dev/mail/ lists them;
with DEBUG off the page is 404 and the settings never choose the keeping backend."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import mail
from django.core.mail import get_connection
from django.test import Client
from pytest_django.fixtures import Settings

from accounts import services
from enroll import devmail
from tests.cli import ROOT

pytestmark = pytest.mark.django_db

BACKEND = "enroll.devmail.ConsoleAndFileBackend"


@pytest.fixture
def dev_mail(settings: Settings, tmp_path: Path) -> Path:
    settings.DEBUG = True
    settings.EMAIL_BACKEND = BACKEND
    settings.ENROLL_DEV_MAIL_DIR = tmp_path / "dev-mail"
    return tmp_path / "dev-mail"


def test_the_page_lists_the_mails_sent_newest_first_with_their_links(
    dev_mail: Path, client: Client, alice: object, capsys: pytest.CaptureFixture[str]
) -> None:
    mail.send_mail("First", "Hello <b>one</b>", None, ["one@example.com"])
    services.queue_password_reset("alice@example.com")  # the task runs inline in the tests

    printed = capsys.readouterr().out
    assert "Subject: First" in printed  # still printed to the console, as before
    assert len(list(dev_mail.glob("*.eml"))) == 2
    page = client.get("/dev/mail/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.index("First") > html.index("Reset")  # newest first
    assert "one@example.com" in html
    assert "Hello &lt;b&gt;one&lt;/b&gt;" in html  # a mail's text is text, never markup
    assert '<a href="http://pki.example.test/accounts/password/reset/' in html  # links are clickable
    assert "2 messages kept" in html
    assert '<time datetime="' in html  # when each was sent, in the reader's time zone
    assert 'href="/dev/mail/"' in html  # the footer links the page in development


def test_the_page_says_how_to_get_mail_when_there_is_none(dev_mail: Path, client: Client) -> None:
    html = client.get("/dev/mail/").content.decode()
    assert "No mail yet" in html
    assert str(dev_mail) in html


def test_the_page_is_404_and_unlinked_with_debug_off(client: Client, settings: Settings) -> None:
    settings.DEBUG = False
    assert client.get("/dev/mail/").status_code == 404
    assert "/dev/mail/" not in client.get("/accounts/login/").content.decode()


def test_a_message_that_is_not_mail_is_skipped(dev_mail: Path) -> None:
    dev_mail.mkdir(parents=True)
    (dev_mail / "99990101T000000000000-broken.eml").write_bytes(b"\xff\xfe not a message")
    devmail.keep(
        mail.EmailMessage("Kept", "body", "from@example.com", ["to@example.com"]),
        now=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    mails, total = devmail.kept_mails()
    assert total == 2
    assert [m.subject for m in mails if m.subject] == ["Kept"]


def test_a_message_without_recipients_is_not_kept(dev_mail: Path) -> None:
    with get_connection() as connection:
        connection.send_messages([mail.EmailMessage("Nobody", "body", "from@example.com", [])])
    assert not dev_mail.exists() or list(dev_mail.glob("*.eml")) == []


@pytest.mark.parametrize(
    ("environment", "backend"),
    [
        ({"DJANGO_DEBUG": "true"}, BACKEND),
        ({"DJANGO_DEBUG": "false"}, "django.core.mail.backends.console.EmailBackend"),
        (
            {"DJANGO_DEBUG": "true", "EMAIL_HOST": "smtp.example.org"},
            "django.core.mail.backends.smtp.EmailBackend",
        ),
    ],
)
def test_the_settings_keep_mail_only_in_development_without_a_mail_server(
    tmp_path: Path, environment: dict[str, str], backend: str
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SECRET_KEY": "a-test-secret-key-0123456789abcdefghijklmnopqrstuv",
        "ENROLL_DATA_DIR": str(tmp_path),
        **environment,
    }
    code = "from enroll import settings; print(settings.EMAIL_BACKEND)"
    shown = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert shown.stdout.strip() == backend
