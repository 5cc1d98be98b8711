"""From sign-up to the downloaded certificate with the keyboard alone, in a real browser (Debian Chromium
driven by Playwright): the person only presses keys and types (Tab, Enter, text), never clicks; the
browser goes to an address only where a person would paste one (the link of the verification mail). An
administrator's approval happens in between through the flow (enroll.flows.approve).

Every element the Tab key reaches on the way must show where the focus is (an outline or a focus ring
wider than nothing) and be on screen. Screenshots under ``test-artifacts/screenshots/keyboard``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from pytest_django.live_server_helper import LiveServer

from ca.models import CertificateAuthority
from enroll import flows
from enroll.models import EnrollmentRequest
from tests.conftest import make_csr
from tests.harness.chromium import BrowserSession, ChromiumThread, close_session, open_session, shoot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-Passphrase-42"
SHOTS = "keyboard"
#: The most Tab presses to reach the next target: more is a page a keyboard user cannot get through.
MOST_TABS = 60

#: What the focused element shows: an outline, or a box-shadow (Bootstrap's focus ring), and where it is.
FOCUS_STATE = """() => {
    const e = document.activeElement;
    if (!e || e === document.body) return null;
    const s = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    return {
        html: e.outerHTML.slice(0, 120),
        outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0,
        ring: s.boxShadow !== 'none' && s.boxShadow !== '',
        onScreen: r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < window.innerHeight,
    };
}"""


class Keyboard:
    """The person's keyboard on one page, and every focus problem seen on the way."""

    def __init__(self, session: BrowserSession) -> None:
        self.page = session.page
        self.problems: list[str] = []
        self.stops = 0

    def tab_to(self, selector: str) -> None:
        """Press Tab until the element matching ``selector`` has the focus, checking each stop."""
        for _ in range(MOST_TABS):
            self.page.keyboard.press("Tab")
            self.stops += 1
            state: dict[str, Any] | None = self.page.evaluate(FOCUS_STATE)
            if state is None:
                continue
            if not (state["outline"] or state["ring"]):
                self.problems.append(f"{self.page.url}: no visible focus on {state['html']}")
            if not state["onScreen"]:
                self.problems.append(f"{self.page.url}: the focus is off screen on {state['html']}")
            if self.page.evaluate("(s) => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"{self.page.url}: {selector} not reached with {MOST_TABS} presses of Tab")

    def enter(self) -> None:
        with self.page.expect_navigation():
            self.page.keyboard.press("Enter")


def sign_up(_browser: Browser, session: BrowserSession, keys: Keyboard) -> None:
    page = session.open("/accounts/signup/")
    shoot(page, f"{SHOTS}/01-sign-up")
    # The first Tab reaches "Skip to the content", shown only then; Enter goes past the navigation.
    keys.tab_to("a.skip-link")
    assert page.locator("a.skip-link").is_visible()
    page.keyboard.press("Enter")
    keys.tab_to("input[name=username]")
    page.keyboard.type("kim")
    keys.tab_to("input[name=email]")
    page.keyboard.type("kim@example.com")
    keys.tab_to("input[name=password1]")
    page.keyboard.type(PASSWORD)
    keys.tab_to("input[name=password2]")
    page.keyboard.type(PASSWORD)
    keys.enter()
    assert "/accounts/signup/" not in page.url, page.content()


def verify(_browser: Browser, session: BrowserSession, keys: Keyboard, link: str) -> None:
    page = session.open(link)  # pasted from the mail
    keys.tab_to("form button[type=submit]:not(.nav-link)")
    keys.enter()
    shoot(page, f"{SHOTS}/02-verified")


def submit(_browser: Browser, session: BrowserSession, keys: Keyboard, csr_pem: str) -> str:
    page = session.page
    keys.tab_to('nav a[href="/requests/new/"]')
    keys.enter()
    keys.tab_to("textarea[name=csr_text]")
    page.keyboard.type(csr_pem)
    shoot(page, f"{SHOTS}/03-new-request")
    keys.tab_to("form:has(textarea[name=csr_text]) [type=submit]")
    keys.enter()
    assert re.search(r"/requests/\d+/$", page.url), page.content()
    return page.url


def download(_browser: Browser, session: BrowserSession, keys: Keyboard, request_url: str) -> tuple[str, str]:
    page = session.open(request_url)  # the page the person left open, reloaded after the approval mail
    keys.tab_to('a[href^="/certificates/"]:not([href*="/download/"])')
    keys.enter()
    shoot(page, f"{SHOTS}/04-certificate")
    keys.tab_to('a[href$="/download/pem/"]')
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    saved = info.value
    folder = Path(saved.path())
    return saved.suggested_filename, folder.read_text(encoding="ascii")


@pytest.mark.django_db(transaction=True)
def test_a_person_goes_from_sign_up_to_the_downloaded_certificate_with_the_keyboard_alone(
    live_server: LiveServer,
    chromium: ChromiumThread,
    ca: CertificateAuthority,
    admin_user: User,
    settings: Any,
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url  # the mailed link leads to this server
    # Reduced motion: Bootstrap's smooth scrolling off, so a focused element is on screen at once.
    session = chromium.call(open_session, live_server.url, accept_downloads=True, reduced_motion="reduce")
    keys = Keyboard(session)

    chromium.call(sign_up, session, keys)
    link = re.search(r"https?://\S+/accounts/verify/\S+", str(mail.outbox[-1].body))
    assert link is not None, mail.outbox[-1].body
    chromium.call(verify, session, keys, link.group(0))
    request_url = chromium.call(submit, session, keys, make_csr().decode())

    request = EnrollmentRequest.objects.get(owner__username="kim")
    approved = flows.approve(request_id=request.pk, by=admin_user)
    assert approved.certificate is not None, approved.reason

    name, pem = chromium.call(download, session, keys, request_url)
    chromium.call(close_session, session)

    assert pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:80]
    assert name.endswith(".pem")
    assert keys.problems == [], "\n".join(keys.problems)
    assert keys.stops > 5
