"""Mail leaves the request path (accounts.emails, docs/MAIL.md): queued on commit as a django-tasks task with
a JSON-only context, sent by the task, a failure logged and never raised; and the real worker,
``manage.py db_worker``, sending what a request queued, then stopping."""

from __future__ import annotations

import email
import email.policy
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction

from accounts import emails, services
from tests.cli import ROOT, ManagePy

VERIFY_CONTEXT = {
    "username": "alice",
    "email": "alice@example.com",
    "link": "http://pki.example.test/accounts/verify/x/",
    "hours": 48,
    "expires_at": "7 March 2026, 12:00 UTC",
    "profile_url": "http://pki.example.test/accounts/profile/",
}


def change_that_fails(user: User) -> None:
    with transaction.atomic():
        services.send_verification_email(user)
        raise RuntimeError("the change fails after the mail was queued")


def test_a_rolled_back_change_sends_nothing(alice: User) -> None:
    with pytest.raises(RuntimeError):
        change_that_fails(alice)
    assert mail.outbox == []
    services.send_verification_email(alice)  # outside a transaction: at once, as in a request
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]


def test_a_mail_waits_for_the_commit_of_the_change_that_queued_it(
    alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        services.send_verification_email(alice)
        assert mail.outbox == []
    assert len(mail.outbox) == 1


def test_a_context_that_is_not_json_is_refused_where_it_is_queued(alice: User) -> None:
    """The database backend stores the task's arguments as JSON; a model instance fails in the caller (and
    so in its tests, which run tasks inline), not later in the worker."""
    with pytest.raises(TypeError):
        emails.send("accounts/email/verify_email", to="alice@example.com", context={"user": alice})
    assert mail.outbox == []


def test_a_send_failure_in_the_task_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(emails, "send_mail", refuse)
    assert emails.deliver.call("accounts/email/verify_email", "alice@example.com", VERIFY_CONTEXT) is False
    assert "could not send the e-mail 'Confirm your e-mail address" in caplog.text
    assert emails.deliver.call("accounts/email/no_such_message", "alice@example.com", {}) is False
    assert "could not write the e-mail 'accounts/email/no_such_message'" in caplog.text


# --- the real worker -----------------------------------------------------------------------------------

QUEUE = """
import os
from django.contrib.auth.models import User
from django.test import Client
from django_tasks_db.models import DBTaskResult
from accounts import emails

User.objects.create_user("alice", "alice@example.com", "a-long-enough-passphrase-7")
client = Client()
for address in ("alice@example.com", "nobody@example.com"):
    answer = client.post("/accounts/password/reset/", {"email": address})
    assert answer.status_code == 302, answer.status_code
emails.send("accounts/email/no_such_message", to="alice@example.com", context={})
waiting = DBTaskResult.objects.filter(status="READY").count()
print(len(os.listdir(os.environ["ENROLL_LOAD_MAIL_DIR"])), waiting)
"""

STATUSES = """
from django_tasks_db.models import DBTaskResult
print(" ".join(sorted(DBTaskResult.objects.values_list("status", flat=True))))
"""

VERIFY = """
from django.contrib.auth.models import User
from accounts import services
print(services.send_verification_email(User.objects.get(username="alice")))
"""


def messages(folder: Path) -> list[email.message.EmailMessage]:
    found = []
    for path in sorted(folder.iterdir()):
        for part in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if part.strip():
                found.append(email.message_from_bytes(part, policy=email.policy.default))
    return found


def test_the_worker_sends_what_requests_queued_and_stops(
    tmp_path: Path, new_installation: Callable[[Path], ManagePy]
) -> None:
    """A fresh installation on a file database (both passes) with the production task backend and a file
    mail backend (``tests.load_settings``): the reset requests answer without sending anything; one
    ``db_worker --batch`` run sends the one mail due, logs the broken one and goes on, and exits by
    itself once the queue is empty. Then a long-running worker sends a new link within seconds of it
    being queued, and stops on SIGTERM (what systemd and ``make run`` send)."""
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    (tmp_path / "data" / "static").mkdir(parents=True)
    cli = new_installation(tmp_path)
    cli.env.update(
        DJANGO_SETTINGS_MODULE="tests.load_settings",
        ENROLL_LOAD_MAIL_DIR=str(mail_dir),
        DJANGO_ALLOWED_HOSTS="testserver",
        ENROLL_PUBLIC_URL="http://pki.example.test",
    )
    assert cli.ok("shell", "-c", QUEUE) == "0 3"  # nothing sent in the requests; three tasks waiting

    worker = [sys.executable, str(ROOT / "manage.py"), "db_worker", "--no-reload", "--no-startup-delay"]
    batch = subprocess.run(
        [*worker, "--batch"], cwd=ROOT, env=cli.env, capture_output=True, text=True, timeout=120, check=False
    )
    assert batch.returncode == 0, batch.stderr
    assert "could not write the e-mail 'accounts/email/no_such_message'" in batch.stderr
    (reset,) = messages(mail_dir)
    assert reset["To"] == "alice@example.com"
    assert reset["Subject"] == "Reset your password for the certificate portal"
    assert "http://pki.example.test/accounts/password/reset/" in reset.get_content()
    assert cli.ok("shell", "-c", STATUSES) == "SUCCESSFUL SUCCESSFUL SUCCESSFUL"

    running = subprocess.Popen(
        [*worker, "--interval", "0.1"],
        cwd=ROOT,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.ok("shell", "-c", VERIFY) == "True"
        deadline = time.monotonic() + 60
        while len(messages(mail_dir)) < 2 and time.monotonic() < deadline and running.poll() is None:
            time.sleep(0.1)
        assert [m["Subject"] for m in messages(mail_dir)][1:] == [
            "Confirm your e-mail address for the certificate portal"
        ]
    finally:
        running.send_signal(signal.SIGTERM)
        _, stderr = running.communicate(timeout=30)
    assert running.returncode == 0, stderr
    assert "Traceback" not in stderr
