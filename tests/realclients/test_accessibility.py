"""Every portal page in a real browser (Debian Chromium driven by Playwright) passes axe-core 4.10.3
(tests/harness/axe) with no ``serious`` or ``critical`` violation and no horizontal overflow, at 1280 and
390 px, in the light and the dark theme: the pages people see before logging in (log in, sign up,
password reset, help, a page that does not exist) and after (dashboard, new request, key generator,
SPKAC, a request, a certificate, renew, revoke, profile, password change), and in dark the development
mail page. One browser, one login.

On the way it checks what the checks rest on: the theme switch in the navigation (Light / Dark / Auto)
sets Bootstrap's ``data-bs-theme`` and keeps the choice across pages, Auto follows the system's
preference, and times written by ``{% when %}`` are shown in the browser's time zone with UTC on hover.
Screenshots of the dark pages go to ``test-artifacts/screenshots/dark``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.core.mail import EmailMessage
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority
from enroll import devmail, flows
from tests.conftest import make_csr
from tests.harness.chromium import (
    DESKTOP,
    PHONE,
    BrowserSession,
    ChromiumThread,
    close_session,
    open_session,
    shoot,
)
from tests.harness.process import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

AXE = REPO / "tests" / "harness" / "axe" / "axe.min.js"
#: The impacts that fail the test.
BLOCKING = ("serious", "critical")
THEMES = ("light", "dark")
#: The browser's time zone: never UTC, so a time shown in it differs from the server's text.
ZONE = "America/New_York"
SHOTS = "dark"


def audit(session: BrowserSession) -> list[str]:
    """axe's serious and critical violations on the page as it is (each node with what axe says of it),
    and a horizontal overflow if any. axe adds inline styles while it checks, which the portal's CSP
    refuses: those reports are dropped (the page's own stay for :func:`close_session`)."""
    page = session.page
    own_reports = len(session.csp_violations)
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")  # through DevTools: the CSP does not apply
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    page.wait_for_timeout(50)  # the console reports of axe's styles arrive
    del session.csp_violations[own_reports:]
    found = [
        f"{violation['id']} ({violation['impact']}): {node['target'][0] if node['target'] else '?'}: "
        + (node.get("failureSummary") or "").replace("\n", " ")[:220]
        for violation in result["violations"]
        if violation["impact"] in BLOCKING
        for node in violation["nodes"][:6]
    ]
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        found.append(f"horizontal overflow of {overflow} px")
    width = page.viewport_size["width"] if page.viewport_size else 0
    theme = page.evaluate("document.documentElement.getAttribute('data-bs-theme')")
    return [f"{page.url} at {width} px, {theme}: {problem}" for problem in found]


def open_page(session: BrowserSession, path: str) -> None:
    """Go to ``path``; a path starting with ``!`` is a page expected to answer an error (404)."""
    if path.startswith("!"):
        response = session.page.goto(session.base + path[1:])
        assert response is not None, path
        assert response.status == 404, path
    else:
        session.open(path)


def audit_pages(_browser: Browser, session: BrowserSession, paths: list[str], theme: str) -> list[str]:
    problems = []
    page = session.page
    for path in paths:
        open_page(session, path)
        shown = page.evaluate("document.documentElement.getAttribute('data-bs-theme')")
        if shown != theme:
            problems.append(f"{page.url}: the {theme} theme was chosen, the page shows {shown}")
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            problems += audit(session)
        page.set_viewport_size(DESKTOP)
        if theme == "dark" and not path.startswith("!"):
            name = path.strip("/").replace("/", "-") or "dashboard"
            shoot(page, f"{SHOTS}/{name}")
    return problems


def choose_theme(_browser: Browser, session: BrowserSession, choice: str) -> dict[str, Any]:
    """Pick ``choice`` in the navigation's theme menu (opening the collapsed menu first on a phone) and
    say what the page and the storage hold afterwards."""
    page = session.page
    toggler = page.locator(".navbar-toggler")
    if toggler.is_visible():
        toggler.click()
    page.locator("#theme-menu").click()
    page.locator(f"#theme-switch button[data-theme-choice={choice}]").click()
    state: dict[str, Any] = page.evaluate(
        """() => ({
            theme: document.documentElement.getAttribute('data-bs-theme'),
            stored: localStorage.getItem('enroll-theme'),
            label: document.getElementById('theme-current').textContent,
            pressed: document.querySelector('#theme-switch [aria-pressed=true]').dataset.themeChoice,
        })"""
    )
    return state


def auto_follows_the_system(_browser: Browser, session: BrowserSession) -> list[str | None]:
    """With Auto, the theme as the system's preference goes from light to dark (no reload)."""
    page = session.page
    seen = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for _ in range(40):  # the media query's change event comes after the call
            if page.evaluate("document.documentElement.getAttribute('data-bs-theme')") == scheme:
                break
            page.wait_for_timeout(50)
        seen.append(page.evaluate("document.documentElement.getAttribute('data-bs-theme')"))
    page.emulate_media(color_scheme="light")
    return seen


def log_in(_browser: Browser, session: BrowserSession) -> None:
    page = session.open(reverse("accounts:login"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-password-123")
    page.locator("form").filter(has=page.locator("input[name=password]")).locator("[type=submit]").click()
    page.wait_for_load_state()
    assert reverse("accounts:login") not in page.url, page.content()


def times_on(_browser: Browser, session: BrowserSession, path: str) -> list[dict[str, str]]:
    """Each ``{% when %}`` time on ``path``: its ISO value, the text shown and the hover text."""
    session.open(path)
    times: list[dict[str, str]] = session.page.evaluate(
        """() => Array.from(document.querySelectorAll('time[data-localtime]')).map((t) => ({
            iso: t.getAttribute('datetime'), text: t.textContent, title: t.title}))"""
    )
    return times


@pytest.mark.django_db(transaction=True)
def test_every_portal_page_passes_axe_at_both_widths_in_both_themes(
    live_server: LiveServer,
    chromium: ChromiumThread,
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    settings: Any,
    tmp_path: Path,
) -> None:
    certificate = issue_for(alice)
    waiting = flows.submit_csr(owner=alice, data=make_csr())
    anonymous = [
        reverse("accounts:login"),
        reverse("accounts:signup"),
        reverse("accounts:password-reset"),
        reverse("portal:help"),
        "!/no-such-page/",
    ]
    signed_in = [
        reverse("portal:dashboard"),
        reverse("portal:request-new"),
        reverse("portal:keygen"),
        reverse("portal:request-spkac"),
        reverse("portal:request-detail", args=[waiting.pk]),
        reverse("portal:certificate-detail", args=[certificate.pk]),
        reverse("portal:certificate-renew", args=[certificate.pk]),
        reverse("portal:certificate-revoke", args=[certificate.pk]),
        reverse("accounts:profile"),
        reverse("accounts:password-change"),
    ]
    session = chromium.call(
        open_session, live_server.url, timezone_id=ZONE, locale="en-US", color_scheme="light"
    )
    problems: list[str] = []

    chromium.call(lambda _b: session.open(reverse("accounts:login")))
    assert chromium.call(auto_follows_the_system, session) == ["light", "dark"]
    problems += chromium.call(audit_pages, session, anonymous, "light")
    chromium.call(log_in, session)
    problems += chromium.call(audit_pages, session, signed_in, "light")

    # The switch, at phone width (behind the collapsed menu): Dark is kept in the browser, for every page.
    chromium.call(lambda _b: session.page.set_viewport_size(PHONE))
    chosen = chromium.call(choose_theme, session, "dark")
    assert chosen == {"theme": "dark", "stored": "dark", "label": "Dark", "pressed": "dark"}
    chromium.call(lambda _b: session.page.set_viewport_size(DESKTOP))
    problems += chromium.call(audit_pages, session, signed_in, "dark")

    # The development mail page (DEBUG only), with a mail kept, in dark and light.
    settings.DEBUG = True
    settings.ENROLL_DEV_MAIL_DIR = tmp_path / "dev-mail"
    devmail.keep(
        EmailMessage("Verify your address", "Open http://example.test/x", "a@example.com", ["b@example.com"])
    )
    problems += chromium.call(audit_pages, session, ["/dev/mail/"], "dark")
    settings.DEBUG = False

    times = chromium.call(times_on, session, reverse("portal:request-detail", args=[waiting.pk]))
    assert times, "the request page shows when it was submitted"
    for time in times:
        assert "UTC" in time["title"], time  # UTC on hover
        assert "UTC" not in time["text"], time  # shown in the browser's zone ...
        assert "EST" in time["text"] or "EDT" in time["text"], time  # ... and named

    chromium.call(lambda _b: session.open(reverse("portal:dashboard")))
    assert (
        chromium.call(choose_theme, session, "auto")["stored"] is None
    )  # Auto: nothing kept, the system decides
    chromium.call(lambda _b: session.open(reverse("portal:dashboard")))
    chromium.call(choose_theme, session, "dark")
    chromium.call(lambda _b: session.page.context.clear_cookies())  # logged out; the theme stays
    problems += chromium.call(audit_pages, session, anonymous, "dark")
    chromium.call(close_session, session)

    assert problems == [], "\n".join(problems)
