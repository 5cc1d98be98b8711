"""Usernames that can be names on certificates, look-alikes refused (issue 20, item 5; accounts.usernames)."""

from __future__ import annotations

import json
import string
from importlib import resources
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings

from accounts import usernames

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Settings) -> None:
    settings.ENROLL_RATE_LIMITS = {}


def sign_up(username: str, email: str = "carol@example.com") -> Any:
    data = {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD}
    return Client().post(reverse("accounts:signup"), data)


def refused(answer: Any) -> str:
    assert answer.status_code == 200, "the form is shown again"
    errors = answer.context["form"].errors.get("username")
    assert errors, "refused on the username field"
    return " ".join(errors)


@pytest.mark.parametrize(
    ("taken", "wanted"),
    [
        ("alice", "\u0430lice"),  # Cyrillic a: mixed script, refused by the character set first
        ("alice", "aIice"),  # capital i
        ("alice", "AIice"),
        ("alice", "ALICE"),
        ("bobl", "bob1"),
        ("bob1", "BOBL"),
        ("m0m", "rnOm"),
        ("O0O", "000"),
    ],
)
def test_look_alikes_of_an_existing_account_are_refused(taken: str, wanted: str) -> None:
    User.objects.create_user(taken, "someone@example.com", PASSWORD)
    refused(sign_up(wanted))
    assert User.objects.count() == 1


@pytest.mark.parametrize("wanted", ["alice.smith", "alice_2", "a", "x" * 64, "vvalice"])
def test_distinct_names_are_accepted(wanted: str) -> None:
    User.objects.create_user("alice", "someone@example.com", PASSWORD)
    answer = sign_up(wanted)
    assert answer.status_code == 302, answer.content.decode()
    assert User.objects.filter(username=wanted).exists()


@pytest.mark.parametrize(
    ("wanted", "words"),
    [
        ("x" * 65, "at most 64 characters"),
        ("y" * 150, "at most 64 characters"),
        ("\u0430lice", "a-z and A-Z"),
        ("alice@example", "a-z and A-Z"),
        ("al ice", "a-z and A-Z"),
        ("ali+ce", "a-z and A-Z"),
        ("élise", "a-z and A-Z"),
    ],
)
def test_names_a_certificate_cannot_hold_or_outside_the_set_are_refused(wanted: str, words: str) -> None:
    assert words in refused(sign_up(wanted))
    assert not User.objects.exists()


def test_the_ascii_skeleton_map_is_tr39_restricted_to_ascii_as_the_package_has_it() -> None:
    data = json.loads(
        resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    allowed = set(string.ascii_letters + string.digits + "._-")
    pairs = {
        frozenset((source, target["c"]))
        for source, targets in data.items()
        for target in targets
        if set(source) <= allowed and set(target["c"]) <= allowed
    }
    ours: set[frozenset[str]] = set()
    for source, target in usernames.ASCII_SKELETON.items():
        ours.add(frozenset((source, target)))
    # The package has 1-l and I-l (so 1 and I are one class through l), 0-O and m-rn.
    assert pairs == {
        frozenset(("0", "O")),
        frozenset(("1", "l")),
        frozenset(("I", "l")),
        frozenset(("m", "rn")),
    }
    assert ours == pairs


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=64))
def test_a_name_clashes_with_its_case_variants_and_its_own_look_alikes(name: str) -> None:
    assert usernames.problem(name) is None
    assert usernames.keys(name) & usernames.keys(name.upper())
    assert usernames.keys(name) & usernames.keys(name.lower())
    swapped = name.replace("l", "1").replace("O", "0")
    assert usernames.keys(name) & usernames.keys(swapped)


def test_unicode_names_when_allowed(settings: Settings) -> None:
    settings.ENROLL_USERNAME_UNICODE = True
    User.objects.create_user("alice", "someone@example.com", PASSWORD)
    assert "one script" in refused(sign_up("\u0430lice"))  # Cyrillic a + Latin
    assert "looks too much like" in refused(sign_up("\u0430\u04cf\u0456\u0441\u0435"))  # all Cyrillic
    assert sign_up("élise", email="elise@example.com").status_code == 302
    assert sign_up("\u0434\u043c\u0438\u0442\u0440\u0438\u0439", email="d@example.com").status_code == 302
    fullwidth = sign_up("\uff42\uff4f\uff42", email="b@example.com")  # NFKC: bob
    assert fullwidth.status_code == 302
    assert User.objects.filter(username="bob").exists()


def test_check_usernames_reports_existing_accounts_and_changes_nothing() -> None:
    User.objects.create_user("alice", "a@example.com", PASSWORD)
    User.objects.create_user("aIice", "b@example.com", PASSWORD)
    User.objects.create_user("z" * 70, "c@example.com", PASSWORD)
    User.objects.create_user("\u0430lice", "d@example.com", PASSWORD)
    User.objects.create_user("fine", "e@example.com", PASSWORD)
    from io import StringIO

    out = StringIO()
    with pytest.raises(CommandError, match="3 username"):
        call_command("check_usernames", stdout=out)
    report = out.getvalue()
    assert "'aIice': looks like the older account 'alice'." in report
    assert "at most 64 characters" in report
    assert "'\\u0430lice'" in report
    assert "fine" not in report
    assert User.objects.count() == 5


def test_check_usernames_passes_when_all_follow_the_rules() -> None:
    User.objects.create_user("alice", "a@example.com", PASSWORD)
    from io import StringIO

    out = StringIO()
    call_command("check_usernames", stdout=out)
    assert "Every username follows the rules." in out.getvalue()


def test_a_look_alike_taken_while_the_form_was_checked_is_refused_under_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from accounts import services

    User.objects.create_user("alice", "someone@example.com", PASSWORD)
    with pytest.raises(services.UsernameTaken):
        services.sign_up(username="aIice", email="x@example.com", password=PASSWORD)
    # The form's check passed (as if alice signed up a moment later); the service's check refuses it.
    real = usernames.clashing_account
    calls: list[str] = []

    def first_call_misses(name: str, **kwargs: Any) -> str | None:
        calls.append(name)
        return None if len(calls) == 1 else real(name, **kwargs)

    monkeypatch.setattr(usernames, "clashing_account", first_call_misses)
    answer = sign_up("aIice")
    assert "looks too much like" in refused(answer)
    assert len(calls) == 2
    assert not User.objects.filter(username="aIice").exists()


def test_the_admin_add_user_form_follows_the_username_rules(admin_client: Client) -> None:
    User.objects.create_user("alice", "someone@example.com", PASSWORD)
    add = reverse("admin:auth_user_add")
    data = {"password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"}
    for name in ("aIice", "\u0430lice", "x" * 65):
        answer = admin_client.post(add, {"username": name, **data})
        assert answer.status_code == 200
        assert answer.context["adminform"].form.errors.get("username"), name
    assert admin_client.post(add, {"username": "carol", **data}).status_code == 302
    assert User.objects.filter(username="carol").exists()


def test_the_admin_user_form_checks_a_new_name_and_leaves_an_old_one(admin_client: Client) -> None:
    User.objects.create_user("alice", "someone@example.com", PASSWORD)
    old = User.objects.create_user("z" * 70, "old@example.com", PASSWORD)
    change = reverse("admin:auth_user_change", args=[old.pk])
    form = admin_client.get(change).context["adminform"].form
    data = {
        k: v for k, v in form.initial.items() if v is not None and k not in ("groups", "user_permissions")
    }
    data.update(
        {
            "username": "bob1",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "12:00:00",
            "last_login_0": "",
            "last_login_1": "",
        }
    )
    data.pop("date_joined", None)
    data.pop("last_login", None)
    data.pop("password", None)
    data["username"] = "z" * 70
    assert admin_client.post(change, data).status_code == 302  # unchanged: left as it is
    data["username"] = "bob1"
    assert admin_client.post(change, data).status_code == 302  # a fine new name
    data["username"] = "aIice"
    answer = admin_client.post(change, data)
    assert answer.status_code == 200
    assert answer.context["adminform"].form.errors.get("username")
