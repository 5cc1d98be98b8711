"""The revocation screen in a real browser: after a revocation, a front server's row turns from amber to
green in place once it reports the new CRL (``static/ca/propagation.js`` polling ``/pki/health.json``),
with no CSP violation."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.pki import node_reports
from ca.services import frontservers
from ca.services.crl import current_crl
from ca.services.revocation import revoke_certificate
from tests.ca.reporting import make_report, signed
from tests.harness.chromium import ChromiumThread, close_session, open_session

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def post(url: str, body: bytes, signature: str) -> int:
    request = urllib.request.Request(  # noqa: S310 (the test's own live server, http)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": node_reports.CONTENT_TYPE, node_reports.SIGNATURE_HEADER: signature},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status)


def watch_the_node_turn_green(browser: Browser, base: str, report: tuple[bytes, str]) -> tuple[str, str, str]:
    """The row's color when the screen opens, after the report is sent (waited for), and the live region."""
    session = open_session(browser, base)
    page = session.open("/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-password-123")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    session.open(reverse("admin:ca-revocation"))
    row = page.locator('tr[data-node="web1"]')
    before = row.get_attribute("data-colour") or ""
    assert post(base + reverse("ca:report"), *report) == 200
    page.wait_for_selector('tr[data-node="web1"][data-colour="green"]', timeout=10_000)
    after = row.locator('[data-field="badge"]').inner_text()
    live = page.locator("#enroll-propagation-status").inner_text()
    close_session(browser, session)
    return before, after, live


@pytest.mark.real_client
@pytest.mark.real_server
def test_after_a_revocation_the_screen_shows_the_node_turn_green_as_it_reports(
    live_server: LiveServer,
    chromium: ChromiumThread,
    admin_user: User,
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
) -> None:
    certificate = issue_for(alice)
    token = frontservers.register(name="web1", cas=[ca], actor="test")[1]
    old = current_crl(ca=ca).number
    body, signature = signed(make_report(node="web1", crls=[(ca, old)]), token)
    assert post(live_server.url + reverse("ca:report"), body, signature) == 200
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)  # publishes on commit
    new = current_crl(ca=ca).number
    assert new > old

    before, after, live = chromium.call(
        watch_the_node_turn_green, live_server.url, signed(make_report(node="web1", crls=[(ca, new)]), token)
    )

    assert before == "amber"
    assert after == "green"
    assert "web1 has it" in live
