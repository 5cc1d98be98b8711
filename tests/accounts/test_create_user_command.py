"""manage.py create_user: an account from the command line under sign-up's rules (accounts.provisioning)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from accounts.services import verified_email
from ca.models import AuditEntry, AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple-42"


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_creates_a_verified_account_with_a_password_printed_once_that_logs_in(client: Client) -> None:
    lines = run("dora", "--email", "Dora@Example.ORG", "--verified")

    user = User.objects.get(username="dora")
    assert user.email == "Dora@example.org"  # the domain as certificates carry it, as sign-up stores it
    assert verified_email(user) == "Dora@example.org"
    assert lines[0] == "created dora <Dora@example.org> (e-mail address verified)"
    assert lines[1].startswith("password (shown once")
    password = lines[2]
    assert len(password) >= 24
    assert user.check_password(password)
    assert mail.outbox == []  # verified: no link to send
    events = list(AuditEntry.objects.filter(subject_user=user).order_by("pk").values_list("event", flat=True))
    assert events == [AuditEvent.SIGN_UP, AuditEvent.EMAIL_VERIFIED]
    answer = client.post(reverse("accounts:login"), {"username": "dora", "password": password})
    assert answer.status_code == 302
    assert client.get(reverse("portal:request-new")).status_code == 200


def test_it_reads_the_password_from_a_file_prints_none_and_sends_the_link_when_not_verified(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\nignored second line\n")

    lines = run("erin", "--email", "erin@example.com", "--password-file", str(secret))

    user = User.objects.get(username="erin")
    assert user.check_password(PASSWORD)
    assert verified_email(user) is None
    assert lines == [
        "created erin <erin@example.com> "
        "(e-mail address not verified yet: the verification link was sent to it)"
    ]
    assert PASSWORD not in "\n".join(lines)
    assert [message.to for message in mail.outbox] == [["erin@example.com"]]
    assert "/accounts/verify/" in mail.outbox[0].body


@pytest.mark.parametrize(
    ("username", "email", "password", "words"),
    [
        ("", "x@example.com", None, "Choose a username"),
        ("al ice", "x@example.com", None, "letters"),
        ("a" * 65, "x@example.com", None, "at most 64 characters"),
        ("alice", "x@example.com", None, "looks too much like"),  # taken
        ("a1ice", "x@example.com", None, "looks too much like"),  # a look-alike of alice
        ("frank", "no-at-sign", None, "one @"),
        ("frank", '"quoted"@example.com', None, "without quotes"),
        ("frank", "ALICE@example.com", None, "another account has it"),
        ("frank", "frank@example.com", "short", "too short"),
        ("frank", "frank@example.com", "12345678901234", "entirely numeric"),
    ],
)
def test_it_refuses_what_sign_up_refuses_and_stores_nothing(
    alice: User, tmp_path: Path, username: str, email: str, password: str | None, words: str
) -> None:
    args = [username, "--email", email]
    if password is not None:
        secret = tmp_path / "password"
        secret.write_text(password)
        args += ["--password-file", str(secret)]
    before = User.objects.count()

    with pytest.raises(CommandError) as refused:
        run(*args)

    assert words in str(refused.value)
    assert str(refused.value).endswith("Nothing was created.")
    assert User.objects.count() == before
    assert mail.outbox == []


@pytest.mark.parametrize(("content", "words"), [("", "is empty"), ("x" * 5000, "too long")])
def test_it_refuses_an_empty_or_oversized_password_file(tmp_path: Path, content: str, words: str) -> None:
    secret = tmp_path / "password"
    secret.write_text(content)
    with pytest.raises(CommandError, match=words):
        run("gina", "--email", "gina@example.com", "--password-file", str(secret))
    with pytest.raises(CommandError, match="Cannot read the password file"):
        run("gina", "--email", "gina@example.com", "--password-file", str(tmp_path / "missing"))
    assert not User.objects.filter(username="gina").exists()
