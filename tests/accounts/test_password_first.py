"""The profile and password change check the current password first and count wrong ones toward the
lock-out (issue 20, item 4): the profile never says which addresses other accounts use to someone without
the password, and guessing through a logged-in browser locks out like guessing on the login page."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

PROFILE = reverse("accounts:profile")
PASSWORD_CHANGE = reverse("accounts:password-change")
RIGHT = "alice-password-123"


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Settings) -> None:
    settings.ENROLL_RATE_LIMITS = {}  # the lock-out is what is tested here


def page(answer: Any) -> str:
    return str(answer.content.decode())


def is_locked_out(answer: Any) -> bool:
    return answer.status_code == 429 and "Login locked for now" in page(answer)


def change_email(client: Client, email: str, password: str) -> Any:
    return client.post(PROFILE, {"email": email, "password": password})


def change_password(client: Client, old: str) -> Any:
    new = "a-new-password-4567"
    return client.post(PASSWORD_CHANGE, {"old_password": old, "new_password1": new, "new_password2": new})


def test_the_address_taken_message_comes_only_after_the_right_password(alice: User, bob: User) -> None:
    client = Client()
    client.force_login(alice)
    wrong = change_email(client, "bob@example.com", "not-the-password")
    assert wrong.status_code == 200
    assert "That is not your current password." in page(wrong)
    assert "Another account already uses" not in page(wrong)
    assert "already your e-mail address" not in page(change_email(client, "alice@example.com", "nope"))
    right = change_email(client, "bob@example.com", RIGHT)
    assert "Another account already uses this e-mail address." in page(right)
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert mail.outbox == []


def test_100_wrong_passwords_on_the_profile_lock_out(alice: User, bob: User, settings: Settings) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    client.force_login(alice)
    answers = [change_email(client, "bob@example.com", f"guess-{n}") for n in range(100)]
    assert all(a.status_code == 200 for a in answers[: limit - 1])
    assert all(is_locked_out(a) for a in answers[limit - 1 :])
    assert not any("Another account already uses" in page(a) for a in answers)
    # Locked out, even the right password is not checked, and the address is not judged.
    locked = change_email(client, "bob@example.com", RIGHT)
    assert is_locked_out(locked)
    # The login page is locked for the account too, from anywhere.
    login = Client().post(
        reverse("accounts:login"), {"username": "alice", "password": RIGHT}, REMOTE_ADDR="198.51.100.7"
    )
    assert is_locked_out(login)
    stored = " ".join(AccessAttempt.objects.values_list("post_data", flat=True))
    assert "guess-" not in stored


def test_100_wrong_old_passwords_on_password_change_lock_out(alice: User, settings: Settings) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    client.force_login(alice)
    answers = [change_password(client, f"guess-{n}") for n in range(100)]
    assert all(a.status_code == 200 for a in answers[: limit - 1])
    assert all(is_locked_out(a) for a in answers[limit - 1 :])
    assert is_locked_out(change_password(client, RIGHT))
    alice.refresh_from_db()
    assert alice.check_password(RIGHT)
    stored = " ".join(AccessAttempt.objects.values_list("post_data", flat=True))
    assert "guess-" not in stored
    assert "a-new-password-4567" not in stored


def test_a_right_password_below_the_limit_still_works(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    assert change_password(client, "wrong-once").status_code == 200
    assert change_password(client, RIGHT).status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("a-new-password-4567")
