"""Lock-out after failed logins (django-axes): per username and per address, a clear 429 page, lifted by the
cool-off time, a password reset or an administrator."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

PASSWORD = "alice-password-123"
LOGIN = reverse("accounts:login")


@pytest.fixture(autouse=True)
def _three_failures(settings: Settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    settings.ENROLL_RATE_LIMITS = {}  # the rate limits are tested in test_rate_limits.py


def log_in(username: str, password: str, address: str = "192.0.2.1") -> Any:
    return Client().post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def fail(times: int, username: str = "alice", address: str = "192.0.2.1") -> Any:
    """``times`` logins with a wrong password; the last answer."""
    for _ in range(times):
        answer = log_in(username, "wrong-password", address)
    return answer


def is_locked_out(answer: Any) -> bool:
    return answer.status_code == 429 and "Login locked for now" in answer.content.decode()


def test_a_username_is_locked_out_after_repeated_failures_even_with_the_right_password(alice: User) -> None:
    wrong = fail(2)
    assert wrong.status_code == 200
    assert "Please enter a correct username and password" in wrong.content.decode()
    assert log_in("alice", PASSWORD).status_code == 302  # below the limit: the right password works
    assert is_locked_out(fail(1, address="192.0.2.2"))  # the third failure locks
    locked = log_in("alice", PASSWORD, address="198.51.100.1")  # from anywhere
    assert is_locked_out(locked)
    assert locked["Retry-After"] == str(15 * 60)
    page = locked.content.decode()
    assert "Try again in 15 minutes" in page
    assert reverse("accounts:password-reset") in page
    assert "_auth_user_id" not in locked.client.session


def test_an_address_is_locked_out_after_failures_for_several_usernames(alice: User, bob: User) -> None:
    fail(1, username="alice", address="203.0.113.7")
    fail(1, username="bob", address="203.0.113.7")
    assert is_locked_out(fail(1, username="nobody", address="203.0.113.7"))
    assert is_locked_out(log_in("bob", "bob-password-123", address="203.0.113.7"))
    assert log_in("bob", "bob-password-123", address="203.0.113.8").status_code == 302


def test_the_lock_lifts_after_the_cool_off_time(alice: User, settings: Settings) -> None:
    settings.AXES_COOLOFF_TIME = dt.timedelta(minutes=15)
    with time_machine.travel(dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), tick=False) as clock:
        fail(3)
        assert is_locked_out(log_in("alice", PASSWORD))
        clock.shift(dt.timedelta(minutes=14))
        assert is_locked_out(log_in("alice", PASSWORD))  # a try during the lock starts the wait again
        clock.shift(dt.timedelta(minutes=16))
        assert log_in("alice", PASSWORD).status_code == 302


def test_a_password_reset_lifts_the_lock_of_the_username(alice: User) -> None:
    fail(3)
    client = Client()
    client.post(reverse("accounts:password-reset"), {"email": "alice@example.com"})
    match = re.search(r"(/accounts/password/reset/[^\s]+/)", str(mail.outbox[-1].body))
    assert match
    form_url = client.get(match.group(1))["Location"]
    new = "a-brand-new-passphrase-7"
    assert client.post(form_url, {"new_password1": new, "new_password2": new}).status_code == 302
    assert log_in("alice", new, address="198.51.100.1").status_code == 302


def test_a_password_reset_does_not_unlock_a_guessing_address(alice: User, bob: User) -> None:
    for username in ("bob", "carol", "dave"):
        fail(1, username=username, address="203.0.113.9")
    client = Client()
    client.post(reverse("accounts:password-reset"), {"email": "alice@example.com"})
    match = re.search(r"(/accounts/password/reset/[^\s]+/)", str(mail.outbox[-1].body))
    assert match
    form_url = client.get(match.group(1))["Location"]
    new = "a-brand-new-passphrase-7"
    client.post(form_url, {"new_password1": new, "new_password2": new})
    assert is_locked_out(log_in("bob", "bob-password-123", address="203.0.113.9"))


def test_an_administrator_lifts_the_lock_in_the_admin(alice: User, admin_user: User) -> None:
    fail(3)
    admin = Client()
    admin.force_login(admin_user)
    changelist = reverse("admin:axes_accessattempt_changelist")
    listing = admin.get(changelist)
    assert listing.status_code == 200
    assert "alice" in listing.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.filter(username="alice").values_list("pk", flat=True)]
    confirm = admin.post(changelist, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert confirm.status_code == 302
    assert log_in("alice", PASSWORD).status_code == 302


def test_an_administrator_lifts_the_lock_from_the_command_line(alice: User) -> None:
    fail(3)
    call_command("axes_reset_username", "alice", verbosity=0)
    assert log_in("alice", PASSWORD).status_code == 302


def test_the_admin_login_is_locked_out_too(admin_user: User) -> None:
    admin_login = reverse("admin:login")
    for _ in range(3):
        Client().post(admin_login, {"username": "admin", "password": "wrong"}, REMOTE_ADDR="192.0.2.1")
    answer = Client().post(admin_login, {"username": "admin", "password": "x"}, REMOTE_ADDR="192.0.2.5")
    assert is_locked_out(answer)


def test_nobody_is_locked_out_when_the_lock_out_is_turned_off(alice: User, settings: Settings) -> None:
    settings.AXES_ENABLED = False  # what ENROLL_LOCKOUT_ENABLED=false sets
    fail(5)
    assert log_in("alice", PASSWORD).status_code == 302
