"""The certificate page's "Install on…" chooser (enroll.install, the certificate page): the platform guessed
from the User-Agent or asked for with ``?platform=``, each platform's file and steps, nothing to install on a
revoked or expired certificate; and the owner's first download being recorded (enroll.models.FirstDownload).
The switching in the browser is in tests/realclients/test_install_browser.py."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.revocation import revoke_certificate
from enroll.install import Platform, chosen_platform, platform_from_user_agent
from enroll.models import FirstDownload

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.0.0"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile "
    "Safari/537.36"
)
FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1"
)
FIREFOX_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 "
    "Mobile/15E148 Safari/605.1.15"
)


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def page_of(client: Client, certificate: Certificate, *, user_agent: str = "", query: str = "") -> str:
    url = reverse("portal:certificate-detail", args=[certificate.pk]) + query
    response = client.get(url, HTTP_USER_AGENT=user_agent)
    assert response.status_code == 200
    return response.content.decode()


def shown_steps(body: str) -> list[str]:
    """The platforms whose steps the page shows (the others are there, hidden, for the browser's script)."""
    return [
        platform
        for platform, hidden in re.findall(
            r'<div class="install-steps" data-install-for="(\w+)"( hidden)?>', body
        )
        if not hidden
    ]


def file_formats(body: str) -> list[str]:
    """The downloads under "Your file", in order."""
    match = re.search(r'<div class="list-group mb-2" id="install-downloads">(.*?)</div>', body, re.S)
    assert match is not None, "no install downloads"
    return re.findall(r'data-format="([\w-]+)"', match.group(1))


def checked_platform(body: str) -> str:
    (value,) = re.findall(r'name="platform" id="platform-\w+" value="(\w+)"[^>]* checked>', body)
    return str(value)


# --- the guess from the User-Agent ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "platform"),
    [
        (CHROME_MAC, Platform.MACOS),
        (CHROME_WINDOWS, Platform.WINDOWS),
        (FIREFOX_LINUX, Platform.FIREFOX),
        (FIREFOX_MAC, Platform.FIREFOX),
        (CHROME_LINUX, Platform.LINUX),
        (CHROME_ANDROID, Platform.ANDROID),
        (FIREFOX_ANDROID, Platform.ANDROID),
        (SAFARI_IPHONE, Platform.IOS),
        (FIREFOX_IPAD, Platform.IOS),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 Chrome/131.0.0.0", Platform.LINUX),
        ("curl/8.11.0", Platform.COMMAND_LINE),
        ("python-requests/2.32", Platform.COMMAND_LINE),
        ("", Platform.COMMAND_LINE),
    ],
)
def test_it_guesses_the_platform_from_the_user_agent(user_agent: str, platform: Platform) -> None:
    assert platform_from_user_agent(user_agent) == platform


@pytest.mark.parametrize(
    "asked", [None, "", "MACOS", "mac", "windows ", "<script>", "macos' onload='x", "ios\x00", "x" * 5000]
)
def test_it_ignores_a_platform_that_is_not_one_and_guesses(asked: str | None) -> None:
    assert chosen_platform(asked, CHROME_WINDOWS) == (Platform.WINDOWS, False)


def test_a_platform_asked_for_wins_over_the_guess() -> None:
    assert chosen_platform("ios", CHROME_WINDOWS) == (Platform.IOS, True)


# --- the page ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "platform", "files", "legacy"),
    [
        (CHROME_MAC, "macos", ["chain"], True),
        (CHROME_WINDOWS, "windows", ["chain"], False),
        (FIREFOX_LINUX, "firefox", ["chain"], False),
        (CHROME_LINUX, "linux", ["chain"], False),
        (CHROME_ANDROID, "android", ["chain"], True),
        (SAFARI_IPHONE, "ios", ["chain"], True),
        ("curl/8.11.0", "cli", ["pem", "chain"], False),
    ],
)
def test_it_shows_the_guessed_platforms_file_and_steps_only(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    issue_for: IssueFor,
    user_agent: str,
    platform: str,
    files: list[str],
    legacy: bool,
) -> None:
    certificate = issue_for(alice)

    body = page_of(logged_in(client, alice), certificate, user_agent=user_agent)

    assert "Install on…" in body
    assert checked_platform(body) == platform
    assert shown_steps(body) == [platform]
    assert file_formats(body) == files
    if platform != "cli":
        encryption = "legacy" if legacy else "modern"
        assert re.search(rf'id="p12-{encryption}" value="{encryption}" checked>', body)
        assert f"A .p12 file with the <strong>{encryption} encryption</strong>" in body


@pytest.mark.parametrize("platform", [p.value for p in Platform])
def test_every_platform_has_a_plain_link_that_works_without_javascript(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor, platform: str
) -> None:
    certificate = issue_for(alice)

    body = page_of(
        logged_in(client, alice), certificate, user_agent=CHROME_WINDOWS, query=f"?platform={platform}"
    )

    assert checked_platform(body) == platform
    assert shown_steps(body) == [platform]
    assert 'data-asked="true"' in body
    assert '<form method="get" action="#install" id="install-chooser"' in body


@pytest.mark.parametrize(
    "steps",
    [
        ("macos", ["Keychain Access", "login", "Always Allow", "-legacy.p12"]),
        (
            "windows",
            ["Certificate Import Wizard", "Current User", "Automatically select the certificate store"],
        ),
        ("firefox", ["Privacy &amp; Security", "View Certificates", "Your Certificates", "Import…"]),
        ("linux", ["Manage certificates", "Your certificates", "pk12util -d sql:$HOME/.pki/nssdb -i alice-"]),
        (
            "android",
            ["Encryption &amp; credentials", "Install a certificate", "VPN &amp; app user certificate"],
        ),
        ("ios", ["AirDrop", "Profile Downloaded", "VPN &amp; Device Management", "device passcode"]),
        ("cli", ["curl --cert alice-", "--key alice.key"]),
    ],
)
def test_each_platforms_steps_name_what_the_person_sees_there(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor, steps: tuple[str, list[str]]
) -> None:
    platform, phrases = steps
    certificate = issue_for(alice)

    body = page_of(logged_in(client, alice), certificate, query=f"?platform={platform}")
    match = re.search(rf'<div class="install-steps" data-install-for="{platform}">(.*?)</div>', body, re.S)

    assert match is not None
    for phrase in phrases:
        assert phrase in match.group(1), phrase


def test_every_download_is_on_the_page_once_and_the_command_line_recipes_are_folded(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)

    body = page_of(logged_in(client, alice), certificate, user_agent=CHROME_MAC)

    for fmt in ("pem", "chain", "der", "pkcs7"):
        assert body.count(f'href="{reverse("portal:certificate-download", args=[certificate.pk, fmt])}"') == 1
    assert '<details class="mb-3" id="command-line-recipes">' in body
    recipes = body[body.index('id="command-line-recipes"') :]
    assert "openssl pkcs12 -export -in alice-" in recipes
    assert "openssl pkcs12 -export -legacy -in alice-" in recipes
    assert body.index('id="install"') < body.index('id="command-line-recipes"')


def test_staff_see_the_chooser_but_no_p12_builder(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    helpdesk = User.objects.create_user(
        "helpdesk", "helpdesk@example.com", "helpdesk-password-123", is_staff=True
    )
    helpdesk.user_permissions.add(Permission.objects.get(codename="view_certificate"))

    body = page_of(logged_in(client, helpdesk), certificate, user_agent=CHROME_MAC)

    assert "Install on…" in body
    assert 'id="p12-builder"' not in body


def test_a_revoked_certificate_has_no_install_help_and_says_what_to_do(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)

    body = page_of(logged_in(client, alice), certificate, user_agent=CHROME_MAC, query="?platform=macos")

    assert "Install on…" not in body
    assert "install-steps" not in body
    assert 'id="p12-builder"' not in body
    assert "install.js" not in body
    assert "This certificate was revoked" in body
    assert "it cannot be used again" in body
    assert "renew it with a new key" in body
    assert (
        f'href="{reverse("portal:certificate-renew", args=[certificate.pk])}">Renew with a new key</a>'
        in body
    )
    assert "command-line-recipes" not in body
    assert reverse("portal:certificate-download", args=[certificate.pk, "pem"]) in body, "kept for the record"


def test_an_expired_certificate_has_no_install_help_and_offers_renewal(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    Certificate.objects.filter(pk=certificate.pk).update(
        not_before=certificate.not_before - dt.timedelta(days=800),
        not_after=certificate.not_before - dt.timedelta(days=400),
    )

    body = page_of(logged_in(client, alice), certificate, user_agent=CHROME_MAC)

    assert "Install on…" not in body
    assert "install-steps" not in body
    assert "This certificate expired" in body
    assert "Renew it to get a new certificate for the same device." in body
    assert f'href="{reverse("portal:certificate-renew", args=[certificate.pk])}">Renew</a>' in body


# --- the first download -------------------------------------------------------------------------------


def test_the_owners_first_download_is_recorded_once(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    logged_in(client, alice)
    assert not FirstDownload.objects.filter(certificate=certificate).exists()

    client.get(reverse("portal:certificate-download", args=[certificate.pk, "chain"]))
    client.get(reverse("portal:certificate-download", args=[certificate.pk, "pem"]))

    (first,) = FirstDownload.objects.filter(certificate=certificate)
    assert first.fmt == "chain"
    assert first.downloaded_at is not None


@pytest.mark.parametrize("who", ["staff", "head", "lookup"])
def test_a_download_by_staff_a_head_request_or_the_p12_builders_look_up_is_not_the_owners_download(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor, who: str
) -> None:
    certificate = issue_for(alice)
    url = reverse("portal:certificate-download", args=[certificate.pk, "pem"])
    if who == "staff":
        helpdesk = User.objects.create_user(
            "helpdesk", "h@example.com", "helpdesk-password-123", is_staff=True
        )
        helpdesk.user_permissions.add(Permission.objects.get(codename="view_certificate"))
        assert logged_in(client, helpdesk).get(url).status_code == 200
    elif who == "head":
        assert logged_in(client, alice).head(url).status_code == 200
    else:  # static/portal/p12.js looking for the key in the browser when the page opens
        assert logged_in(client, alice).get(url, HTTP_X_ENROLL_LOOKUP="key").status_code == 200

    assert not FirstDownload.objects.filter(certificate=certificate).exists()
