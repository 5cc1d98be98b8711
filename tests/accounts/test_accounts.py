"""Accounts: sign-up, e-mail verification, login/logout, password reset and change, profile, checks."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail, signing
from django.core.checks import run_checks
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from accounts import emails, services
from accounts.checks import check_email_backend
from accounts.models import Profile
from accounts.services import TokenState, make_verification_token, verified_email
from ca import audit
from ca.models import AuditEntry, AuditEvent

pytestmark = pytest.mark.django_db

PUBLIC_URL = "http://pki.example.test"
STRONG_PASSWORD = "correct-horse-battery-staple-42"
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


# --- helpers ---------------------------------------------------------------------------------------


def sign_up(client: Client, **overrides: str) -> Any:
    data = {
        "username": "carol",
        "email": "carol@example.com",
        "password1": STRONG_PASSWORD,
        "password2": STRONG_PASSWORD,
        **overrides,
    }
    return client.post(reverse("accounts:signup"), data)


def link_path(message: mail.EmailMessage, name: str = "verify") -> str:
    """The path of the first portal link of kind ``name`` in a mail body (links are absolute)."""
    match = re.search(rf"{re.escape(PUBLIC_URL)}(/accounts/[^\s]*{name}[^\s]*)", str(message.body))
    assert match, f"no {name} link in:\n{message.body}"
    return match.group(1)


def verify_path(token: str) -> str:
    return reverse("accounts:verify-email", kwargs={"token": token})


def make_user(username: str = "dave", email: str = "dave@example.com") -> User:
    user = User.objects.create_user(username, email, STRONG_PASSWORD)
    Profile.objects.create(user=user)
    return user


def errors_of(response: Any, field: str) -> list[str]:
    errors: list[str] = response.context["form"].errors.get(field, [])
    return errors


def audit_events(username: str) -> list[str]:
    return list(
        AuditEntry.objects.filter(subject_user=username).order_by("pk").values_list("event", flat=True)
    )


# --- sign-up ---------------------------------------------------------------------------------------


def test_sign_up_page_has_labelled_fields(client: Client) -> None:
    response = client.get(reverse("accounts:signup"))
    assert response.status_code == 200
    html = response.content.decode()
    for field in ("username", "email", "password1", "password2"):
        assert f'for="id_{field}"' in html
    assert "csrfmiddlewaretoken" in html


def test_sign_up_creates_the_account_logs_in_and_mails_a_verification_link(client: Client) -> None:
    with time_machine.travel(START, tick=False):
        response = sign_up(client)
        logged_in_as = client.session.get("_auth_user_id")  # (the session expires by real time)

    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:profile")
    user = User.objects.get(username="carol")
    assert user.email == "carol@example.com"
    assert user.check_password(STRONG_PASSWORD)
    assert Profile.objects.filter(user=user, email_verified_at__isnull=True).exists()
    assert verified_email(user) is None
    assert logged_in_as == str(user.pk)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["carol@example.com"]
    assert "Confirm your e-mail address" in message.subject
    assert "carol" in message.body
    assert link_path(message).startswith("/accounts/verify/")
    assert "48 hours" in message.body
    assert "3 March 2026, 12:00 UTC" in message.body  # the expiry, stated
    assert "&quot;" not in message.body
    assert "&amp;" not in message.body


def test_sign_up_shows_the_next_step_on_the_profile_page(client: Client) -> None:
    response = sign_up(client)
    page = client.get(response["Location"])
    html = page.content.decode()
    assert "We sent a link to carol@example.com" in html
    assert "Not verified" in html
    assert "Send a new link" in html


def test_sign_up_writes_an_audit_entry(client: Client) -> None:
    sign_up(client)
    entry = AuditEntry.objects.get(event=AuditEvent.SIGN_UP)
    assert entry.actor == User.objects.get(username="carol")
    assert entry.actor_name == "carol"
    assert entry.subject_user == "carol"


@pytest.mark.parametrize("email", ["alice@example.com", "ALICE@Example.COM", "  alice@example.com "])
def test_sign_up_refuses_an_email_address_in_use_in_any_case(client: Client, alice: User, email: str) -> None:
    response = sign_up(client, email=email)
    assert response.status_code == 200
    assert "already exists" in " ".join(errors_of(response, "email"))
    assert "already exists" in response.content.decode()  # shown next to the field
    assert not User.objects.filter(username="carol").exists()
    assert mail.outbox == []


@pytest.mark.parametrize("username", ["alice", "ALICE", "Alice"])
def test_sign_up_refuses_a_username_in_use_in_any_case(client: Client, alice: User, username: str) -> None:
    response = sign_up(client, username=username, email="other@example.com")
    assert response.status_code == 200
    assert errors_of(response, "username")
    assert User.objects.count() == 1
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password", "too common"),
        ("84736251904", "entirely numeric"),
        ("short1", "too short"),
        ("carol.example", "too similar"),
    ],
)
def test_sign_up_refuses_a_weak_password_inline(client: Client, password: str, reason: str) -> None:
    response = sign_up(client, password1=password, password2=password)
    assert response.status_code == 200
    assert reason in " ".join(errors_of(response, "password2"))
    assert reason in response.content.decode()
    assert not User.objects.filter(username="carol").exists()
    assert AuditEntry.objects.count() == 0


def test_sign_up_refuses_mismatched_passwords(client: Client) -> None:
    response = sign_up(client, password2=STRONG_PASSWORD + "x")
    assert response.status_code == 200
    assert errors_of(response, "password2")
    assert not User.objects.exists()


@pytest.mark.parametrize("field", ["username", "email", "password1", "password2"])
def test_sign_up_requires_every_field(client: Client, field: str) -> None:
    response = sign_up(client, **{field: ""})
    assert response.status_code == 200
    assert errors_of(response, field)
    assert not User.objects.exists()


def test_logged_in_people_visiting_sign_up_go_to_their_dashboard(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.get(reverse("accounts:signup"))
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:dashboard")


def test_sign_up_is_all_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_audit(**kwargs: Any) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit, "record", broken_audit)
    with pytest.raises(RuntimeError):
        services.sign_up(username="carol", email="carol@example.com", password=STRONG_PASSWORD)
    assert not User.objects.exists()
    assert not Profile.objects.exists()


def test_sign_up_survives_a_mail_server_failure(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The mail goes out from a task after the answer (docs/MAIL.md): the sign-up stands, the task logs
    the failure, and "Send a new link" on the profile page tries again."""

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(emails, "send_mail", refuse)
    response = sign_up(client)
    assert response.status_code == 302
    assert User.objects.filter(username="carol").exists()
    assert (
        "could not send the e-mail 'Confirm your e-mail address for the certificate portal' "
        "to carol@example.com" in caplog.text
    )
    page = client.get(response["Location"])
    assert "Send a new link" in page.content.decode()


# --- verification ----------------------------------------------------------------------------------


def test_the_link_shows_a_confirm_button_and_does_not_verify_on_get(client: Client) -> None:
    sign_up(client)
    path = link_path(mail.outbox[0])
    response = Client().get(path)  # e.g. a mail scanner following the link
    assert response.status_code == 200
    html = response.content.decode()
    assert "Yes, this is my address" in html
    assert "carol@example.com" in html
    assert verified_email(User.objects.get(username="carol")) is None


def test_the_verification_link_verifies_the_address_and_audits_it(client: Client) -> None:
    sign_up(client)
    response = client.post(link_path(mail.outbox[0]))
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:dashboard")
    user = User.objects.get(username="carol")
    assert verified_email(user) == "carol@example.com"
    # Sign-up logs the new account in (audited too, accounts.auditing), then the link verifies.
    assert audit_events("carol") == [AuditEvent.SIGN_UP, AuditEvent.LOGIN, AuditEvent.EMAIL_VERIFIED]
    entry = AuditEntry.objects.get(event=AuditEvent.EMAIL_VERIFIED)
    assert entry.actor == user


def test_the_verification_link_works_without_being_logged_in(client: Client) -> None:
    sign_up(client)
    other_browser = Client()
    response = other_browser.post(link_path(mail.outbox[0]))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:login")
    assert verified_email(User.objects.get(username="carol")) == "carol@example.com"
    assert "_auth_user_id" not in other_browser.session  # a link verifies; it does not log in


def test_the_verification_link_works_once(client: Client) -> None:
    sign_up(client)
    path = link_path(mail.outbox[0])
    client.post(path)
    again = client.post(path)
    assert again.status_code == 200
    assert "already verified" in again.content.decode()
    assert client.get(path).content.decode().count("already verified") >= 1
    assert audit_events("carol").count(AuditEvent.EMAIL_VERIFIED) == 1


def test_the_verification_link_works_until_it_expires(client: Client) -> None:
    with time_machine.travel(START, tick=False):
        sign_up(client)
    path = link_path(mail.outbox[0])
    with time_machine.travel(START + dt.timedelta(hours=48) - dt.timedelta(seconds=1), tick=False):
        response = client.post(path)
    assert response.status_code == 302
    assert verified_email(User.objects.get(username="carol")) == "carol@example.com"


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_expired_link_explains_what_to_do_and_offers_a_new_one(client: Client, method: str) -> None:
    with time_machine.travel(START, tick=False):
        sign_up(client)
    path = link_path(mail.outbox[0])
    with time_machine.travel(START + dt.timedelta(hours=48), tick=False):
        response = getattr(client, method)(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert "This link has expired" in html
    assert "3 March 2026, 12:00 UTC" in html
    assert reverse("accounts:resend-verification") in html
    assert "Send a new link" in html
    assert verified_email(User.objects.get(username="carol")) is None
    assert AuditEvent.EMAIL_VERIFIED not in audit_events("carol")


def test_the_link_lifetime_follows_the_setting(client: Client, settings: Settings) -> None:
    settings.ENROLL_EMAIL_VERIFICATION_HOURS = 2
    with time_machine.travel(START, tick=False):
        sign_up(client)
    assert "2 hours" in mail.outbox[0].body
    with time_machine.travel(START + dt.timedelta(hours=2, seconds=1), tick=False):
        response = client.post(link_path(mail.outbox[0]))
    assert "This link has expired" in response.content.decode()


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_tampered_link_is_refused_with_a_friendly_page(client: Client, method: str) -> None:
    sign_up(client)
    token = link_path(mail.outbox[0]).split("/")[-2]
    tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    response = getattr(client, method)(verify_path(tampered))
    assert response.status_code == 400
    html = response.content.decode()
    assert "This link does not work" in html
    assert "Send a new link" in html  # logged in: the button resends to the account
    assert verified_email(User.objects.get(username="carol")) is None


def test_a_tampered_link_tells_anonymous_people_to_log_in(client: Client) -> None:
    response = client.get(verify_path("not-a-token"))
    assert response.status_code == 400
    html = response.content.decode()
    assert "This link does not work" in html
    assert reverse("accounts:login") in html


def test_a_link_for_another_account_cannot_be_made_by_editing_the_payload(alice: User, bob: User) -> None:
    token = make_verification_token(alice)
    _, signature = token.rsplit(":", 1)
    forged_payload = signing.Signer(salt="other").sign_object({"u": str(bob.pk), "e": "x", "t": 0})
    forged = forged_payload.rsplit(":", 1)[0] + ":" + signature
    assert services.check_verification_token(forged).state is TokenState.INVALID


def test_a_link_for_an_old_address_does_not_verify_the_new_one(client: Client) -> None:
    sign_up(client)
    old_path = link_path(mail.outbox[0])
    client.post(
        reverse("accounts:profile"),
        {"email": "carol@new.example.com", "password": STRONG_PASSWORD},
    )
    response = client.post(old_path)
    assert response.status_code == 200
    assert "This link is for an old address" in response.content.decode()
    user = User.objects.get(username="carol")
    assert user.email == "carol@new.example.com"
    assert verified_email(user) is None


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "a:b",
        ":",
        "::::",
        "%00",
        "é" * 40,
        "A" * 5000,
        "eyJ1IjoiMSJ9:badsignature",
        pytest.param(signing.dumps({"u": "1"}), id="signed-with-another-salt"),
    ],
)
def test_garbage_verification_tokens_never_give_a_500(client: Client, alice: User, token: str) -> None:
    for method in ("get", "post"):
        response = getattr(client, method)(verify_path(token))
        assert response.status_code == 400
    assert client.post(reverse("accounts:resend-verification"), {"token": token}).status_code == 302
    assert mail.outbox == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        [],
        "text",
        None,
        {"u": "1", "e": "x"},
        {"u": 1, "e": "x", "t": 0},
        {"u": "1", "e": 5, "t": 0},
        {"u": "1", "e": "x", "t": "soon"},
        {"u": "1", "e": "x", "t": 10**30},
        {"u": "not-a-number", "e": "x", "t": 0},
        {"u": "999999", "e": "x", "t": 0},
    ],
)
def test_well_signed_but_malformed_tokens_are_invalid(client: Client, alice: User, payload: Any) -> None:
    token = signing.Signer(salt=services.VERIFY_SALT).sign_object(payload)
    assert services.check_verification_token(token).state is TokenState.INVALID
    assert client.post(verify_path(token)).status_code == 400
    assert verified_email(alice) is not None  # untouched


def test_a_link_for_a_deactivated_account_does_not_work(client: Client) -> None:
    user = make_user()
    token = make_verification_token(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert client.post(verify_path(token)).status_code == 400
    assert verified_email(user) is None


def test_verifying_an_account_without_a_profile_creates_it(client: Client) -> None:
    user = User.objects.create_user("erin", "erin@example.com", STRONG_PASSWORD)  # e.g. made by an admin
    response = client.post(verify_path(make_verification_token(user)))
    assert response.status_code == 302
    assert verified_email(user) == "erin@example.com"


# --- resending the link ----------------------------------------------------------------------------


def test_resend_mails_a_new_link_that_works(client: Client) -> None:
    sign_up(client)
    mail.outbox.clear()
    response = client.post(reverse("accounts:resend-verification"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:profile")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["carol@example.com"]
    client.post(link_path(mail.outbox[0]))
    assert verified_email(User.objects.get(username="carol")) == "carol@example.com"


def test_resend_after_expiry_gives_a_working_link(client: Client) -> None:
    with time_machine.travel(START, tick=False):
        sign_up(client)
    later = START + dt.timedelta(days=5)
    with time_machine.travel(later, tick=False):
        client.post(reverse("accounts:resend-verification"))
        response = client.post(link_path(mail.outbox[-1]))
    assert response.status_code == 302
    assert verified_email(User.objects.get(username="carol")) == "carol@example.com"


def test_resend_to_a_verified_address_says_so_and_sends_nothing(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("accounts:resend-verification"), follow=True)
    assert "already verified" in response.content.decode()
    assert mail.outbox == []


def test_resend_from_an_expired_link_works_without_logging_in(client: Client) -> None:
    with time_machine.travel(START, tick=False):
        user = make_user()
        token = make_verification_token(user)
    with time_machine.travel(START + dt.timedelta(days=3), tick=False):
        page = client.get(verify_path(token))
        assert f'value="{token}"' in page.content.decode()
        response = client.post(reverse("accounts:resend-verification"), {"token": token})
        assert response.status_code == 302
        assert response["Location"] == reverse("accounts:login")
        assert [m.to for m in mail.outbox] == [["dave@example.com"]]
        client.post(link_path(mail.outbox[0]))
    assert verified_email(user) == "dave@example.com"


def test_resend_without_login_or_a_usable_link_sends_nothing(client: Client) -> None:
    make_user()
    response = client.post(reverse("accounts:resend-verification"), follow=True)
    assert "Log in, then press" in response.content.decode()
    assert mail.outbox == []


def test_resend_by_get_is_refused(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("accounts:resend-verification")).status_code == 405


# --- login and logout ------------------------------------------------------------------------------


def test_login_page_has_labelled_fields_and_useful_links(client: Client) -> None:
    html = client.get(reverse("accounts:login")).content.decode()
    assert 'for="id_username"' in html
    assert 'for="id_password"' in html
    assert reverse("accounts:password-reset") in html
    assert reverse("accounts:signup") in html


def test_login_goes_to_the_dashboard(client: Client, alice: User) -> None:
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": "alice-password-123"})
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:dashboard")
    assert int(client.session["_auth_user_id"]) == alice.pk


def test_login_follows_a_safe_next_but_not_another_site(client: Client, alice: User) -> None:
    data = {"username": "alice", "password": "alice-password-123"}
    response = client.post(reverse("accounts:login") + "?next=/accounts/profile/", data)
    assert response["Location"] == "/accounts/profile/"
    client.logout()
    response = client.post(reverse("accounts:login") + "?next=https://evil.example/", data)
    assert response["Location"] == reverse("portal:dashboard")


def test_login_with_a_wrong_password_shows_an_error(client: Client, alice: User) -> None:
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_pages_that_need_an_account_send_anonymous_people_to_login(client: Client) -> None:
    for name in ("accounts:profile", "accounts:password-change"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("accounts:login") + "?next=")


def test_logout_by_post_logs_out(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:login")
    assert "_auth_user_id" not in client.session


def test_logout_by_get_is_refused(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert int(client.session["_auth_user_id"]) == alice.pk


# --- password reset and change ---------------------------------------------------------------------


def test_password_reset_mails_a_link_that_sets_a_new_password(client: Client, alice: User) -> None:
    response = client.post(reverse("accounts:password-reset"), {"email": "ALICE@example.com"})
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:password-reset-done")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert "Reset your password" in message.subject
    assert "alice" in message.body
    assert "72 hours" in message.body
    path = link_path(message, "reset")

    response = client.get(path)  # Django moves the token into the session, then to a fixed URL
    assert response.status_code == 302
    form_url = response["Location"]
    new_password = "a-brand-new-passphrase-7"
    weak = client.post(form_url, {"new_password1": "password", "new_password2": "password"})
    assert weak.status_code == 200
    assert "too common" in weak.content.decode()
    done = client.post(form_url, {"new_password1": new_password, "new_password2": new_password})
    assert done.status_code == 302
    assert done["Location"] == reverse("accounts:password-reset-complete")
    assert client.get(done["Location"]).status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(new_password)

    reused = client.get(path)  # the link works once
    assert reused.status_code == 200
    assert "This link does not work" in reused.content.decode()


def test_password_reset_does_not_reveal_whether_an_address_has_an_account(
    client: Client, alice: User
) -> None:
    response = client.post(reverse("accounts:password-reset"), {"email": "nobody@example.com"})
    assert response["Location"] == reverse("accounts:password-reset-done")
    assert mail.outbox == []
    assert "If an account uses that address" in client.get(response["Location"]).content.decode()


def test_password_reset_links_use_the_public_url_not_the_host_header(client: Client, alice: User) -> None:
    client.post(reverse("accounts:password-reset"), {"email": "alice@example.com"})
    assert "testserver" not in mail.outbox[0].body  # the test client's Host header
    assert f"{PUBLIC_URL}/accounts/password/reset/" in mail.outbox[0].body


def test_password_reset_survives_a_mail_server_failure(
    client: Client, alice: User, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(emails, "send_mail", refuse)  # the reset mail goes out like every other
    response = client.post(reverse("accounts:password-reset"), {"email": "alice@example.com"})
    assert response["Location"] == reverse("accounts:password-reset-done")  # the same answer as always
    assert "could not send the e-mail 'Reset your password for the certificate portal'" in caplog.text


@pytest.mark.parametrize("token", ["x", "set-password", "a" * 300])
def test_garbage_password_reset_links_never_give_a_500(client: Client, token: str) -> None:
    url = reverse("accounts:password-reset-confirm", kwargs={"uidb64": "Mg", "token": token})
    response = client.get(url)
    assert response.status_code == 200
    assert "This link does not work" in response.content.decode()


def test_password_change_keeps_you_logged_in(client: Client, alice: User) -> None:
    client.force_login(alice)
    page = client.get(reverse("accounts:password-change"))
    assert 'class="nav-link active"' in page.content.decode()
    new_password = "another-long-passphrase-9"
    response = client.post(
        reverse("accounts:password-change"),
        {"old_password": "alice-password-123", "new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:password-change-done")
    assert client.get(response["Location"]).status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(new_password)
    assert int(client.session["_auth_user_id"]) == alice.pk


def test_password_change_needs_the_old_password(client: Client, alice: User) -> None:
    client.force_login(alice)
    new_password = "another-long-passphrase-9"
    response = client.post(
        reverse("accounts:password-change"),
        {"old_password": "wrong", "new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 200
    assert errors_of(response, "old_password")
    alice.refresh_from_db()
    assert alice.check_password("alice-password-123")


# --- profile ---------------------------------------------------------------------------------------


def test_profile_shows_the_account_and_its_verified_address(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.get(reverse("accounts:profile"))
    assert response.status_code == 200
    assert response.context["nav"] == "profile"
    html = response.content.decode()
    assert "alice@example.com" in html
    assert "Verified" in html
    assert "Not verified" not in html
    assert reverse("accounts:password-change") in html
    assert 'for="id_email"' in html
    assert 'for="id_password"' in html


def test_changing_the_email_unverifies_it_and_mails_both_addresses(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("accounts:profile"), {"email": "alice@new.example.com", "password": "alice-password-123"}
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.email == "alice@new.example.com"
    assert verified_email(alice) is None

    to_new, to_old = sorted(mail.outbox, key=lambda m: m.to != ["alice@new.example.com"])
    assert to_new.to == ["alice@new.example.com"]
    assert "Confirm your e-mail address" in to_new.subject
    assert to_old.to == ["alice@example.com"]
    assert "alice@new.example.com" in to_old.body
    assert "reset your password" in to_old.body

    page = client.get(reverse("accounts:profile")).content.decode()
    assert "Not verified" in page
    client.post(link_path(to_new))
    assert verified_email(alice) == "alice@new.example.com"


def test_changing_the_email_needs_the_current_password(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("accounts:profile"), {"email": "alice@new.example.com", "password": "nope"}
    )
    assert response.status_code == 200
    assert errors_of(response, "password")
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert verified_email(alice) == "alice@example.com"
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("BOB@example.com", "Another account already uses"),
        ("Alice@Example.com", "already your e-mail address"),
        ("not-an-address", "valid email address"),
    ],
)
def test_changing_the_email_refuses_unusable_addresses(
    client: Client, alice: User, bob: User, email: str, message: str
) -> None:
    client.force_login(alice)
    response = client.post(reverse("accounts:profile"), {"email": email, "password": "alice-password-123"})
    assert response.status_code == 200
    assert message in " ".join(errors_of(response, "email"))
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert mail.outbox == []


def test_profile_of_an_account_without_a_profile_row_works(client: Client, admin_user: User) -> None:
    client.force_login(admin_user)
    response = client.get(reverse("accounts:profile"))
    assert response.status_code == 200
    assert "Not verified" in response.content.decode()


# --- CSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "logged_in"),
    [
        ("accounts:signup", {"username": "x", "email": "x@example.com"}, False),
        ("accounts:login", {"username": "alice", "password": "alice-password-123"}, False),
        ("accounts:logout", {}, True),
        ("accounts:resend-verification", {}, True),
        ("accounts:profile", {"email": "a@new.example.com", "password": "alice-password-123"}, True),
        ("accounts:password-reset", {"email": "alice@example.com"}, False),
        ("accounts:password-change", {"old_password": "alice-password-123"}, True),
    ],
)
def test_state_changes_need_a_csrf_token(
    alice: User, name: str, data: dict[str, str], logged_in: bool
) -> None:
    client = Client(enforce_csrf_checks=True)
    if logged_in:
        client.force_login(alice)
    assert client.post(reverse(name), data).status_code == 403
    assert mail.outbox == []


def test_verifying_needs_a_csrf_token() -> None:
    user = make_user()
    client = Client(enforce_csrf_checks=True)
    assert client.post(verify_path(make_verification_token(user))).status_code == 403
    assert verified_email(user) is None


def test_the_forms_carry_a_csrf_token_that_works() -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get(reverse("accounts:signup"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token
    response = client.post(
        reverse("accounts:signup"),
        {
            "csrfmiddlewaretoken": token.group(1),
            "username": "carol",
            "email": "carol@example.com",
            "password1": STRONG_PASSWORD,
            "password2": STRONG_PASSWORD,
        },
    )
    assert response.status_code == 302


# --- the system check ------------------------------------------------------------------------------

CONSOLE = "django.core.mail.backends.console.EmailBackend"


@pytest.mark.parametrize(
    ("debug", "backend", "warned"),
    [
        (False, CONSOLE, True),
        (True, CONSOLE, False),
        (False, "django.core.mail.backends.smtp.EmailBackend", False),
        (False, "django.core.mail.backends.locmem.EmailBackend", False),
    ],
)
def test_console_mail_in_production_is_warned_about(
    settings: Settings, debug: bool, backend: str, warned: bool
) -> None:
    settings.DEBUG = debug
    settings.EMAIL_BACKEND = backend
    found = [m for m in run_checks(include_deployment_checks=True) if m.id == "accounts.W001"]
    assert bool(found) is warned
    if warned:
        assert "EMAIL_HOST" in str(found[0].hint)
    assert check_email_backend(app_configs=None, databases=None) == found


def test_the_mail_check_is_part_of_check_deploy(settings: Settings) -> None:
    settings.DEBUG = False
    settings.EMAIL_BACKEND = CONSOLE
    assert "accounts.W001" not in [m.id for m in run_checks()]  # not on every management command
    assert "accounts.W001" in [m.id for m in run_checks(include_deployment_checks=True)]


# --- admin -----------------------------------------------------------------------------------------


def test_admins_see_who_verified_which_address(client: Client, admin_user: User, alice: User) -> None:
    client.force_login(admin_user)
    response = client.get(reverse("admin:accounts_profile_changelist"))
    assert response.status_code == 200
    assert "alice@example.com" in response.content.decode()
