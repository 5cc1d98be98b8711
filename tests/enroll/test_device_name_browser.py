"""The device name in the in-browser key generator, in a real browser (Chromium via Playwright): a refused
name is shown in plain words and can be corrected without generating a new key; the accepted one is
stored with the request."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pytest_django.live_server_helper import LiveServer

from enroll.models import EnrollmentRequest
from tests.harness.chromium import BrowserSession, ChromiumThread, close_session
from tests.realclients.test_browser_keygen import KEY_PASSPHRASE, log_in, make_user

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]


def generate_and_name(_browser: Browser, session: BrowserSession, folder: Path) -> tuple[str, str]:
    """Generate and save a key, submit with a refused device name, then with a good one; return the
    refusal shown and the request page's URL."""
    page = session.open("/requests/generate/")
    page.wait_for_selector("#keygen[data-state=ready]")
    page.check("#key-type-ec-p256")
    page.fill("#keygen-passphrase", KEY_PASSPHRASE)
    page.fill("#keygen-passphrase2", KEY_PASSPHRASE)
    page.click("#keygen-generate")
    page.wait_for_selector("#keygen[data-state=generated]")
    with page.expect_download() as info:
        page.click("#keygen-save")
    info.value.save_as(str(folder / info.value.suggested_filename))
    page.wait_for_selector("#keygen[data-state=saved]")
    page.fill("#keygen-device-name", "phone\u202egnp.exe")
    page.click("#keygen-submit")
    page.wait_for_selector("#keygen-error:not([hidden])")
    refusal = page.inner_text("#keygen-error")
    page.fill("#keygen-device-name", "  Erin's phone ")
    page.click("#keygen-submit")
    page.wait_for_url(re.compile(r"/requests/\d+/$"))
    return refusal, page.url


def test_the_keygen_page_sends_the_device_name_and_shows_its_refusal(
    live_server: LiveServer, chromium: ChromiumThread, settings: Any, tmp_path: Path
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url
    make_user("erin")

    session = chromium.call(log_in, live_server.url, "erin")
    refusal, request_url = chromium.call(generate_and_name, session, tmp_path)
    chromium.call(close_session, session)

    assert "text-direction override" in refusal
    request = EnrollmentRequest.objects.get(owner__username="erin")
    assert request_url.endswith(f"/requests/{request.pk}/")
    assert request.device_name == "Erin's phone"
