"""A person's journey in both languages in a real browser (Debian Chromium driven by Playwright), one
browser for both: sign up, verify the address from the mail, submit a CSR, an approval through the flows,
and download the installed-format file from the certificate page's "Install on..." chooser.

* In English at 1280 px, as Chrome on a Mac: macOS is chosen, its file is the certificate with its chain.
* In German at 390 px, as Chrome on Android: the person switches to German with the switcher in the
  navigation (folded behind the menu button on a phone) before signing up; every page after it is German
  (``<html lang="de">``, the German headings and buttons), Android is chosen, and its file downloads.
  axe-core finds no serious or critical violation on the German pages at 1280 and at 390 px, in the
  light and the dark theme.

Every page is saved at both widths under ``test-artifacts/screenshots/languages`` (or
``$ENROLL_ARTIFACTS_DIR/languages``), ``en-...`` and ``de-...``. No Content-Security-Policy violation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from django.core import mail
from pytest_django.live_server_helper import LiveServer

from ca.services.authorities import create_ca
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.admin.test_queue_browser import audit
from tests.harness.chromium import (
    ANDROID_CHROME,
    DESKTOP,
    MAC_CHROME,
    PHONE,
    BrowserSession,
    ChromiumThread,
    close_session,
    open_session,
    shoot,
)
from tests.helpers import make_csr

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

SHOTS = "languages"
PASSWORD = "a-long-Passphrase-42"


@dataclass(frozen=True)
class Person:
    """Who walks the journey, in which language, on which device, and what the pages say to them."""

    username: str
    language: str
    user_agent: str
    phone: bool
    platform: str  # the platform the chooser picks for the user agent
    words: dict[str, str]  # page -> a heading or sentence it shows in the person's language

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"

    def shot(self, name: str) -> str:
        return f"{SHOTS}/{self.language}-{name}"


ENGLISH = Person(
    username="eve",
    language="en",
    user_agent=MAC_CHROME,
    phone=False,
    platform="macos",
    words={
        "signup": "Create your account",
        "verify": "Yes, this is my address",
        "new": "New certificate request",
        "submitted": "was submitted",
        "dashboard": "is ready: download it",
        "install": "Install on…",
    },
)
GERMAN = Person(
    username="jonas",
    language="de",
    user_agent=ANDROID_CHROME,
    phone=True,
    platform="android",
    words={
        "signup": "Konto anlegen",
        "verify": "Ja, das ist meine Adresse",
        "new": "Neue Zertifikatsanforderung",
        "submitted": "wurde eingereicht",
        "dashboard": "ist fertig: Laden Sie es herunter",
        "install": "Installieren auf…",
    },
)


def in_language(page: Page, person: Person) -> None:
    assert page.get_attribute("html", "lang") == person.language, page.url


def checked(session: BrowserSession, person: Person) -> list[str]:
    """axe's serious and critical findings on the page, for the German pages at both widths, in the light
    and the dark theme (the system's, which the portal follows by default)."""
    if person.language == "en":
        return []
    page = session.page
    found = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for _ in range(20):  # theme.js follows the system's change (no eval under the portal's CSP)
            if page.get_attribute("html", "data-bs-theme") == scheme:
                break
            page.wait_for_timeout(100)
        assert page.get_attribute("html", "data-bs-theme") == scheme, page.url
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            page.wait_for_timeout(200)  # transitions end before axe measures contrast
            found += [f"{scheme}: {problem}" for problem in audit(session)]
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(PHONE if person.phone else DESKTOP)
    page.wait_for_timeout(300)  # the colours are back before the screenshots
    return found


def sign_up(browser: Browser, base: str, person: Person) -> tuple[BrowserSession, list[str]]:
    session = open_session(
        browser,
        base,
        user_agent=person.user_agent,
        viewport=PHONE if person.phone else DESKTOP,
        is_mobile=person.phone,
        has_touch=person.phone,
        accept_downloads=True,
        locale="en-US",  # the browser asks for English: the German person chooses German on the page
    )
    page = session.open("/accounts/signup/")
    in_language(page, ENGLISH)
    if person.language != "en":
        if person.phone:
            page.click(".navbar-toggler")
        page.locator(f"#language-switch button[value={person.language}]").click()
        page.wait_for_load_state()
        assert page.url.endswith("/accounts/signup/"), page.url
    in_language(page, person)
    assert page.locator("h1").first.inner_text().strip() == person.words["signup"]
    problems = checked(session, person)
    shoot(page, person.shot("01-sign-up"))
    page.fill("input[name=username]", person.username)
    page.fill("input[name=email]", person.email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("main form [type=submit]").click()
    page.wait_for_load_state()
    assert "/accounts/signup/" not in page.url, page.content()
    in_language(page, person)
    shoot(page, person.shot("02-after-sign-up"))
    return session, problems


def verify_and_submit(
    _browser: Browser, session: BrowserSession, person: Person, link: str, csr: str
) -> list[str]:
    page = session.open(link)
    in_language(page, person)
    shoot(page, person.shot("03-verify-link"))
    page.get_by_role("button", name=person.words["verify"]).click()
    page.wait_for_load_state()
    in_language(page, person)
    page = session.open("/requests/new/")
    in_language(page, person)
    assert page.locator("h1").inner_text().strip() == person.words["new"]
    problems = checked(session, person)
    shoot(page, person.shot("04-new-request"))
    page.fill("textarea[name=csr_text]", csr)
    page.locator("#csr-form [type=submit]").click()
    page.wait_for_load_state()
    assert re.search(r"/requests/\d+/$", page.url), page.content()
    in_language(page, person)
    assert page.get_by_text(person.words["submitted"]).first.is_visible()
    problems += checked(session, person)
    shoot(page, person.shot("05-request-submitted"))
    return problems


def install(
    _browser: Browser, session: BrowserSession, person: Person, certificate_id: int
) -> tuple[str, list[str]]:
    """From the dashboard's step to the chooser's file: the downloaded file's name."""
    page = session.open("/")
    in_language(page, person)
    step = page.locator(".next-step", has_text=person.words["dashboard"])
    assert step.count() == 1
    problems = checked(session, person)
    shoot(page, person.shot("06-dashboard-ready"))
    step.locator("a").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/certificates/{certificate_id}/"), page.url
    page.wait_for_selector("#install[data-ready=true]")
    in_language(page, person)
    assert page.locator("#install-title").inner_text().strip() == person.words["install"]
    assert page.is_checked(f"#platform-{person.platform}")
    shown = page.eval_on_selector_all(
        ".install-steps", "nodes => nodes.filter(n => !n.hidden).map(n => n.dataset.installFor)"
    )
    assert shown == [person.platform]
    problems += checked(session, person)
    shoot(page, person.shot("07-certificate-install"))
    download = page.locator("#install-downloads a").first
    with page.expect_download() as info:
        download.click()
    name = info.value.suggested_filename
    page = session.open("/")
    assert page.locator(".next-step", has_text=person.words["dashboard"]).count() == 0
    shoot(page, person.shot("08-dashboard-downloaded"))
    close_session(_browser, session)
    return name, problems


def walk(chromium: ChromiumThread, base: str, person: Person) -> list[str]:
    session, problems = chromium.call(sign_up, base, person)
    (message,) = [m for m in mail.outbox if person.email in m.to]
    link = re.search(r"https?://\S+/accounts/verify/\S+", str(message.body))
    assert link is not None, message.body
    if person.language == "de":  # the mail speaks the language chosen on the page
        assert message.subject == "Bestätigen Sie Ihre E-Mail-Adresse für das Zertifikatsportal"

    problems += chromium.call(verify_and_submit, session, person, link.group(0), make_csr().decode())
    request = EnrollmentRequest.objects.get(owner__username=person.username)
    assert request.status == RequestStatus.SUBMITTED
    approved = flows.approve(request_id=request.pk)
    assert approved.status == RequestStatus.ISSUED, approved.reason
    assert approved.certificate is not None

    name, found = chromium.call(install, session, person, approved.certificate.pk)
    assert name.endswith(".chain.pem"), name
    assert name.startswith(f"{person.username}-"), name
    return problems + found


def test_a_person_goes_from_sign_up_to_the_installed_format_in_english_and_in_german(
    live_server: LiveServer, chromium: ChromiumThread, settings: Any
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url
    create_ca(name="Languages CA", make_default=True)

    problems = walk(chromium, live_server.url, ENGLISH)
    problems += walk(chromium, live_server.url, GERMAN)

    assert problems == [], "\n".join(problems)
