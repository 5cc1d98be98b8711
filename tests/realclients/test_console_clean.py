"""No console errors in a real browser (Debian Chromium driven by Playwright), one browser and one login:

* the Permissions-Policy header names only features Chromium knows (an unknown one makes Chromium log
  "Error with Permissions-Policy header: Unrecognized feature" on every page);
* the pages people use most (sign-in, My certificates, New request and its three ways, help, a wrong
  address) log no console error or warning at all, besides the 404 document's own load failure;
* the favicon is linked and loads, and ``/favicon.ico`` answers with it;
* at phone width the new-request page does not scroll sideways (screenshots in
  ``test-artifacts/screenshots/request``);
* the copy button of a command block puts the whole command on the clipboard and says "Copied" in its live
  region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from accounts.services import mark_email_verified
from tests.harness.chromium import (
    DESKTOP,
    PHONE,
    BrowserSession,
    ChromiumThread,
    close_session,
    open_session,
    shoot,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-Passphrase-42"


def console_of(browser: Browser, base: str, paths: list[str], missing: str) -> dict[str, Any]:
    """Log in, open each page; every console error or warning (and the favicon and copy checks)."""
    from playwright.sync_api import expect  # Playwright's own polling: no eval, which the CSP refuses

    session: BrowserSession = open_session(browser, base)
    session.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = session.page
    messages: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            messages.append(f"{page.url}: {message.type}: {message.text}")

    page.on("console", on_console)
    page.goto(base + reverse("accounts:login"))
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.wait_for_load_state()
    assert reverse("accounts:login") not in page.url
    for path in paths:
        session.open(path)
        page.wait_for_load_state("load")
    response = page.goto(base + missing)
    assert response is not None
    assert response.status == 404
    not_found_heading = page.locator("h1").inner_text()

    # the favicon: linked, loaded by the browser, and /favicon.ico leads to it
    session.open(reverse("portal:request-new"))
    answer = ".then(r => [r.status, r.headers.get('content-type')])"
    icon = page.evaluate("fetch(document.querySelector('link[rel=icon]').href)" + answer)
    legacy_icon = page.evaluate("fetch('/favicon.ico')" + answer)

    # at phone width the three ways stack and long commands scroll inside their block, not the page
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size(DESKTOP)
    shoot(page, "request/new-request")

    # the copy button of the first command block
    command = page.locator("pre.command").first.inner_text().rstrip("\n")
    page.locator(".copy-button").first.click()
    expect(page.locator("#copy-status")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    close_session(browser, session)
    return {
        "messages": messages,
        "not_found_heading": not_found_heading,
        "icon": icon,
        "legacy_icon": legacy_icon,
        "command": command,
        "copied": copied,
        "overflow": overflow,
    }


def test_the_portal_pages_log_no_console_error_and_the_favicon_and_copy_buttons_work(
    live_server: LiveServer, chromium: ChromiumThread
) -> None:
    carol = User.objects.create_user("carol", "carol@example.com", PASSWORD)
    mark_email_verified(carol)
    paths = [
        reverse("portal:dashboard"),
        reverse("portal:request-new"),
        reverse("portal:keygen"),
        reverse("portal:request-spkac"),
        reverse("portal:help"),
        reverse("accounts:profile"),
    ]
    missing = "/no-such-page/"

    seen = chromium.call(console_of, live_server.url, paths, missing)

    about_policy = [text for text in seen["messages"] if "Permissions-Policy" in text or "feature" in text]
    assert about_policy == []
    others = [
        text
        for text in seen["messages"]
        if not (missing in text and "Failed to load resource" in text and "404" in text)
    ]
    assert others == []
    assert seen["not_found_heading"] == "Page not found"
    assert seen["icon"] == [200, "image/svg+xml"]
    assert seen["legacy_icon"] == [200, "image/svg+xml"]
    assert "-pkeyopt ec_paramgen_curve:P-256" in seen["command"]
    assert seen["copied"] == seen["command"]
    assert seen["overflow"] <= 0
