"""The language of the pages: German when the browser asks for it, English when it asks for nothing (or
for a language the portal does not speak), and the switcher (a POST with CSRF to /i18n/setlang/) sets it for
this browser and, for a signed-in person, on their profile, which their next login brings back."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import translation
from pytest_django.fixtures import Settings

from accounts.models import Profile

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("german")]

GERMAN_BROWSER = "de-DE,de;q=0.9,en;q=0.5"
LOGIN = reverse("accounts:login")
SIGNUP = reverse("accounts:signup")
SWITCH = reverse("set_language")


@pytest.mark.parametrize(
    ("accept_language", "language", "words", "not_words"),
    [
        (
            GERMAN_BROWSER,
            "de",
            ["Anmelden", "Passwort vergessen?", "Konto anlegen"],
            ["Forgot your password?"],
        ),
        ("de", "de", ["Anmelden", "Neu hier?"], ["New here?"]),
        ("", "en", ["Log in", "Forgot your password?", "Create an account"], ["Passwort vergessen?"]),
        ("fr-FR,fr;q=0.9", "en", ["Forgot your password?"], ["Passwort vergessen?"]),
        ("en-GB,en;q=0.9,de;q=0.8", "en", ["Forgot your password?"], ["Passwort vergessen?"]),
    ],
    ids=["german-browser", "bare-de", "nothing-asked", "french-browser", "english-first"],
)
def test_it_speaks_the_browsers_language_on_the_login_page(
    client: Client, accept_language: str, language: str, words: list[str], not_words: list[str]
) -> None:
    response = client.get(LOGIN, HTTP_ACCEPT_LANGUAGE=accept_language)

    assert response.status_code == 200
    assert response["Content-Language"] == language
    assert "Accept-Language" in response["Vary"]
    page = response.content.decode()
    for word in words:
        assert word in page
    for word in not_words:
        assert word not in page


def test_it_shows_the_sign_up_page_and_its_form_in_german(client: Client) -> None:
    page = client.get(SIGNUP, HTTP_ACCEPT_LANGUAGE=GERMAN_BROWSER).content.decode()

    assert "<title>Registrieren" in page
    assert "Mit einem Konto können Sie Client-Zertifikate anfordern" in page
    assert "Benutzername" in page  # Django's own field label, in Django's German
    assert "Verwenden Sie 1 bis 64 Zeichen" in page  # the portal's username rule
    assert "E-Mail-Adresse" in page


def test_it_refuses_a_bad_sign_up_in_german(client: Client, alice: User) -> None:
    response = client.post(
        SIGNUP,
        {"username": "a!ice", "email": "alice@example.com", "password1": "x", "password2": "y"},
        HTTP_ACCEPT_LANGUAGE=GERMAN_BROWSER,
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "Verwenden Sie 1 bis 64 Zeichen" in page
    assert "Es gibt bereits ein Konto mit dieser E-Mail-Adresse" in page


def test_a_german_sign_up_gets_a_german_account_and_a_german_link(client: Client) -> None:
    response = client.post(
        SIGNUP,
        {
            "username": "greta",
            "email": "greta@example.com",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
        },
        HTTP_ACCEPT_LANGUAGE=GERMAN_BROWSER,
        follow=True,
    )

    assert (
        "Willkommen, greta! Wir haben einen Link an greta@example.com geschickt." in response.content.decode()
    )
    assert Profile.objects.get(user__username="greta").language == "de"
    (message,) = mail.outbox
    assert message.subject == "Bestätigen Sie Ihre E-Mail-Adresse für das Zertifikatsportal"
    assert message.body.startswith("Hallo greta,\n\nbitte bestätigen Sie, dass greta@example.com")


def test_an_english_sign_up_keeps_english(client: Client) -> None:
    client.post(
        SIGNUP,
        {
            "username": "emma",
            "email": "emma@example.com",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
        },
    )

    assert Profile.objects.get(user__username="emma").language == "en"
    assert mail.outbox[0].subject == "Confirm your e-mail address for the certificate portal"


def test_the_switcher_is_a_post_form_with_a_csrf_token_naming_the_other_language_in_its_own() -> None:
    request = RequestFactory().get("/accounts/login/?next=/requests/")
    with translation.override("en"):
        english = render_to_string("_language_switcher.html", request=request)
    with translation.override("de"):
        german = render_to_string("_language_switcher.html", request=request)

    assert f'<form method="post" action="{SWITCH}"' in english
    assert 'name="csrfmiddlewaretoken"' in english
    assert 'name="next" value="/accounts/login/?next=/requests/"' in english
    assert 'value="de" lang="de"' in english
    assert "Deutsch</button>" in english
    assert 'value="en"' not in english  # the current language is no button
    assert "Sprache:" in german
    assert "English</button>" in german
    assert 'value="de"' not in german


def test_the_switcher_needs_the_csrf_token() -> None:
    browser = Client(enforce_csrf_checks=True)
    token = browser.get(LOGIN).cookies["csrftoken"].value

    refused = browser.post(SWITCH, {"language": "de", "next": LOGIN})
    switched = browser.post(SWITCH, {"language": "de", "next": LOGIN, "csrfmiddlewaretoken": token})

    assert refused.status_code == 403
    assert switched.status_code == 302


def test_the_switcher_sets_the_language_for_this_browser_and_goes_back(client: Client) -> None:
    response = client.post(SWITCH, {"language": "de", "next": LOGIN})

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    cookie = response.cookies["django_language"]
    assert cookie.value == "de"
    assert cookie["samesite"] == "Lax"
    assert cookie["httponly"]
    # The choice beats what the browser asks for.
    page = client.get(LOGIN, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    assert page["Content-Language"] == "de"
    assert "Passwort vergessen?" in page.content.decode()
    client.post(SWITCH, {"language": "en", "next": LOGIN})
    assert "Forgot your password?" in client.get(LOGIN, HTTP_ACCEPT_LANGUAGE=GERMAN_BROWSER).content.decode()


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x"])
def test_the_switcher_never_sends_the_browser_elsewhere(client: Client, next_url: str) -> None:
    response = client.post(SWITCH, {"language": "de", "next": next_url})

    assert "evil.example" not in response.get("Location", "")


def test_a_language_the_portal_does_not_speak_changes_nothing(client: Client, alice: User) -> None:
    client.force_login(alice)
    client.post(SWITCH, {"language": "xx", "next": LOGIN})
    client.post(SWITCH, {"language": "fr", "next": LOGIN})  # Django speaks French; the portal does not

    assert Profile.objects.get(user=alice).language == ""
    assert "Forgot your password?" in Client().get(LOGIN).content.decode()


def test_the_switcher_remembers_a_signed_in_persons_choice_and_their_next_login_brings_it_back(
    client: Client, alice: User
) -> None:
    client.force_login(alice)
    client.post(SWITCH, {"language": "de", "next": reverse("accounts:profile")})

    assert Profile.objects.get(user=alice).language == "de"
    # Another browser, which asks for English: after the login the pages are German.
    other = Client()
    response = other.post(
        LOGIN,
        {"username": "alice", "password": "alice-password-123"},
        HTTP_ACCEPT_LANGUAGE="en-US",
    )
    assert response.status_code == 302
    assert response.cookies["django_language"].value == "de"
    profile = other.get(reverse("accounts:profile"), HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert "Ihr Profil" in profile
    assert "Mitglied seit" in profile


def test_a_login_without_a_chosen_language_leaves_the_browsers(client: Client, alice: User) -> None:
    response = client.post(LOGIN, {"username": "alice", "password": "alice-password-123"})

    assert response.status_code == 302
    assert "django_language" not in response.cookies


def test_an_approver_chooses_their_mail_in_german_and_reads_the_choice_mid_sentence(
    client: Client, settings: Settings
) -> None:
    settings.ENROLL_APPROVER_MAIL = "each"
    approver = User.objects.create_superuser("dora", "dora@example.com", "dora-password-123")
    client.force_login(approver)
    profile = reverse("accounts:profile")

    page = client.get(profile, HTTP_ACCEPT_LANGUAGE="de").content.decode()
    saved = client.post(
        profile, {"form": "approver-mail", "approver_mail": "digest"}, HTTP_ACCEPT_LANGUAGE="de", follow=True
    ).content.decode()

    assert "Wie im Portal eingestellt (derzeit: eine E-Mail pro neuer Anforderung)" in page
    assert (
        "Gespeichert. E-Mails zu neuen Anforderungen: eine E-Mail pro Stunde mit allen neuen Anforderungen."
        in saved
    )
