"""The certificate page's "Install on…" chooser and the dashboard's next steps in a real browser (Debian
Chromium driven by Playwright), one browser and one login:

* at 1280 px as Chrome on a Mac: macOS is chosen and only its steps show; choosing Windows, then the command
  line, switches the steps, the file and the .p12 encryption in place and puts ``?platform=`` in the address;
* at 390 px as Chrome on Android (the same login): Android is chosen, its download starts within the first
  screen (844 px), the dashboard asks once to download the certificate, and no more once it was downloaded;
* with the certificate's key in the browser (as the key generator leaves it), the .p12 builder is the file:
  it moves up before the downloads and starts within the phone's first screen;
* a revoked certificate's page has no install help;
* axe-core finds no serious or critical violation and nothing overflows sideways (as in the admin's
  browser test, tests/admin/test_queue_browser.py).

No Content-Security-Policy violation on any page. Screenshots go to ``test-artifacts/screenshots/install``
(or ``$ENROLL_ARTIFACTS_DIR/install``), as the journey's do.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from pytest_django.live_server_helper import LiveServer

from accounts.services import mark_email_verified
from ca.models import Certificate, RevocationReason
from ca.services.authorities import create_ca
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import FirstDownload
from tests.admin.test_queue_browser import audit
from tests.harness.chromium import (
    ANDROID_CHROME,
    DESKTOP,
    MAC_CHROME,
    PHONE,
    ChromiumThread,
    close_session,
    open_session,
    screenshot_dir,
    shoot,
)
from tests.helpers import make_csr

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, StorageState

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

SHOTS = "install"
PASSWORD = "a-long-Passphrase-42"


def shown_steps(page: Page) -> list[str]:
    return list(
        page.eval_on_selector_all(
            ".install-steps", "nodes => nodes.filter(n => !n.hidden).map(n => n.dataset.installFor)"
        )
    )


def file_formats(page: Page) -> list[str]:
    return list(
        page.eval_on_selector_all("#install-downloads a", "links => links.map(a => a.dataset.format)")
    )


def on_desktop(browser: Browser, base: str, certificate_id: int) -> StorageState:
    """Log in as a Mac, check the guess and switch platforms; return the login for the phone."""
    session = open_session(browser, base, user_agent=MAC_CHROME, accept_downloads=True)
    page = session.open("/accounts/login/")
    page.fill("input[name=username]", "dora")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.wait_for_load_state()
    assert "/accounts/login/" not in page.url, page.content()

    page = session.open(f"/certificates/{certificate_id}/")
    page.wait_for_selector("#install[data-ready=true]")
    assert page.is_checked("#platform-macos")
    assert shown_steps(page) == ["macos"]
    assert file_formats(page) == ["chain"]
    assert page.is_checked("#p12-legacy")
    assert page.is_hidden("#install-show"), "the choice applies at once with JavaScript"
    assert audit(session) == []
    shoot(page, f"{SHOTS}/01-certificate-macos")

    page.click("label[for=platform-windows]")
    assert shown_steps(page) == ["windows"]
    assert page.is_checked("#p12-modern")
    assert page.url.endswith("?platform=windows")
    assert page.get_by_text("Certificate Import Wizard").is_visible()
    assert not page.get_by_text("Keychain Access").is_visible()

    page.click("label[for=platform-cli]")
    assert shown_steps(page) == ["cli"]
    assert file_formats(page) == ["pem", "chain"]
    assert page.is_hidden("#p12-builder")
    assert page.is_visible("#download-pem")
    page.wait_for_timeout(400)  # the buttons' colour transitions (0.15 s) end before axe measures contrast
    assert audit(session) == []
    shoot(page, f"{SHOTS}/02-certificate-command-line")

    page.reload()  # the address keeps the choice, and the script leaves an asked-for platform alone
    page.wait_for_selector("#install[data-ready=true]")
    assert page.is_checked("#platform-cli")
    assert shown_steps(page) == ["cli"]
    state = session.context.storage_state()
    close_session(browser, session)
    return state


def on_phone(browser: Browser, base: str, state: StorageState, certificate_id: int) -> float:
    """As Chrome on Android at 390 px: the download's position on the page, dashboard before and after."""
    session = open_session(
        browser,
        base,
        user_agent=ANDROID_CHROME,
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        storage_state=state,
        accept_downloads=True,
    )
    page = session.open("/")
    ready = page.locator(".next-step", has_text="is ready: download it")
    assert ready.count() == 1
    page.screenshot(path=str(screenshot_dir() / SHOTS / "03-dashboard-ready-phone.png"), full_page=True)

    page = session.open(f"/certificates/{certificate_id}/")
    page.wait_for_selector("#install[data-ready=true]")
    assert page.is_checked("#platform-android")
    assert shown_steps(page) == ["android"]
    assert page.is_checked("#p12-legacy")
    download = page.locator("#install-downloads a").first
    box = download.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= PHONE["height"], f"the download ends at {box['y'] + box['height']} px"
    assert audit(session) == []
    page.screenshot(path=str(screenshot_dir() / SHOTS / "04-certificate-android-phone.png"), full_page=True)
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename.endswith(".chain.pem")

    page = session.open("/")
    assert page.locator(".next-step", has_text="is ready").count() == 0
    page.screenshot(path=str(screenshot_dir() / SHOTS / "05-dashboard-downloaded-phone.png"), full_page=True)
    close_session(browser, session)
    return box["y"]


#: Puts a PKCS#8 key into this browser's key store as the key generator does (static/portal/keys.js).
SAVE_KEY = """async ([pkcs8, spki]) => {
  const der = Uint8Array.from(atob(pkcs8), (c) => c.charCodeAt(0));
  const privateKey = await crypto.subtle.importKey(
    "pkcs8", der, { name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
  await window.EnrollKeys.saveKey({ spkiSha256: spki, privateKey, keyType: "ec-p256",
    createdAt: new Date().toISOString(), requestId: 0 });
}"""


def key_in_this_browser(
    browser: Browser, base: str, state: StorageState, certificate_id: int, pkcs8: str, spki: str
) -> float:
    """As Chrome on Android, with the certificate's key in the browser: the builder is the file, moved up."""
    session = open_session(
        browser, base, user_agent=ANDROID_CHROME, viewport=PHONE, is_mobile=True, storage_state=state
    )
    page = session.open(f"/certificates/{certificate_id}/")
    page.wait_for_selector("#install[data-ready=true]")
    page.evaluate(SAVE_KEY, [pkcs8, spki])
    page.reload()
    page.wait_for_selector("#install[data-key=in-browser]")
    assert page.is_visible("#p12-stored")
    assert page.evaluate(
        "document.getElementById('install-builder').nextElementSibling.id === 'install-downloads'"
    )
    box = page.locator("#p12-builder").bounding_box()
    assert box is not None
    assert box["y"] < PHONE["height"], f"the .p12 builder starts at {box['y']} px"
    assert audit(session) == []
    page.screenshot(
        path=str(screenshot_dir() / SHOTS / "05b-certificate-key-in-browser-phone.png"), full_page=True
    )
    close_session(browser, session)
    return box["y"]


def revoked_page(browser: Browser, base: str, state: StorageState, certificate_id: int) -> None:
    session = open_session(browser, base, user_agent=MAC_CHROME, viewport=DESKTOP, storage_state=state)
    page = session.open(f"/certificates/{certificate_id}/")
    assert page.locator("#install").count() == 0
    assert page.get_by_text("it cannot be used again").is_visible()
    shoot(page, f"{SHOTS}/06-certificate-revoked")
    close_session(browser, session)


def test_the_install_chooser_at_desktop_and_phone_width(
    live_server: LiveServer, chromium: ChromiumThread, settings: Any
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url
    create_ca(name="Install CA", make_default=True)
    dora = User.objects.create_user("dora", "dora@example.com", PASSWORD)
    mark_email_verified(dora)
    issued = flows.approve(request_id=flows.submit_csr(owner=dora, data=make_csr()).pk)
    certificate: Certificate = issued.certificate  # type: ignore[assignment]
    base = live_server.url
    (screenshot_dir() / SHOTS).mkdir(parents=True, exist_ok=True)

    state = chromium.call(on_desktop, base, certificate.pk)
    assert not FirstDownload.objects.filter(certificate=certificate).exists(), "looking is not downloading"

    y = chromium.call(on_phone, base, state, certificate.pk)
    print(f"phone (390x844, Android): the download for the chosen platform starts at y={y:.0f} px")
    assert FirstDownload.objects.get(certificate=certificate).fmt == "chain"

    key = ec.generate_private_key(ec.SECP256R1())
    made_here = flows.approve(request_id=flows.submit_csr(owner=dora, data=make_csr(key)).pk).certificate
    assert made_here is not None
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    y_builder = chromium.call(
        key_in_this_browser,
        base,
        state,
        made_here.pk,
        base64.b64encode(pkcs8).decode(),
        made_here.spki_sha256,
    )
    print(f"phone (390x844, Android), key in the browser: the .p12 builder starts at y={y_builder:.0f} px")

    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    chromium.call(revoked_page, base, state, certificate.pk)
