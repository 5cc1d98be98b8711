"""The approvers' queue in a real browser (Debian Chromium driven by Playwright), one browser and one
login for everything:

* axe-core 4.10.3 (tests/harness/axe) on the admin index, the request list, a request's page, the
  certificate list and a certificate's page, the revocation screen and the audit log, at 1280 and 390 px:
  no ``serious`` or ``critical`` violation, and no horizontal overflow of the page;
* an approver clears 50 waiting requests, each with at most two actions: Approve and next is one click
  (or the key ``a``), Reject and next is typing the reason and one click; the owner's page shows the
  rejection with its reason.

Screenshots of the queue at both widths go to ``test-artifacts/screenshots/queue`` (as the journey's do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
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

pytestmark = [pytest.mark.real_client, pytest.mark.real_server]

AXE = REPO / "tests" / "harness" / "axe" / "axe.min.js"
#: The impacts that fail the test.
BLOCKING = ("serious", "critical")
QUEUE_LENGTH = 50
SHOTS = "queue"


def log_in(browser: Browser, base: str) -> BrowserSession:
    session = open_session(browser, base)
    page = session.open("/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-password-123")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "/admin/login/" not in page.url
    return session


def audit(session: BrowserSession) -> list[str]:
    """axe's serious and critical violations on the page as it is, and a horizontal overflow if any.

    axe itself adds inline styles while it checks, which the portal's CSP refuses: those reports are
    dropped (the page's own, from loading it, stay for :func:`close_session`)."""
    page = session.page
    own_reports = len(session.csp_violations)
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")  # through DevTools: the CSP does not apply
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    page.wait_for_timeout(50)  # the console reports of axe's styles arrive
    del session.csp_violations[own_reports:]
    width = page.viewport_size["width"] if page.viewport_size else 0
    found = [
        f"{violation['id']} ({violation['impact']}): "
        + "; ".join(node["target"][0] if node["target"] else "?" for node in violation["nodes"][:5])
        for violation in result["violations"]
        if violation["impact"] in BLOCKING
    ]
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        found.append(f"horizontal overflow of {overflow} px")
    return [f"{page.url} at {width} px: {problem}" for problem in found]


def audit_pages(_browser: Browser, session: BrowserSession, paths: list[str]) -> list[str]:
    problems = []
    page = session.page
    for path in paths:
        session.open(path)
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            problems += audit(session)
        page.set_viewport_size(DESKTOP)
    return problems


REASON = "Unknown device: ask the service desk for a managed laptop"


def clear_the_queue(_browser: Browser, session: BrowserSession, reject_at: int) -> list[int]:
    """From the list, open the oldest request and decide every one with "… and next": the key ``a`` for
    the first, Reject and next (the reason typed, one click) at ``reject_at``, one click on Approve and
    next for the rest. Returns the number of actions each decision took."""
    page = session.open(reverse("admin:enroll_enrollmentrequest_changelist"))
    shoot(page, f"{SHOTS}/01-queue")
    page.locator("#result_list tbody tr").first.locator("th a").click()
    page.wait_for_load_state()
    shoot(page, f"{SHOTS}/02-request")
    first = page.url
    with page.expect_navigation():
        page.keyboard.press("j")
    assert page.url != first
    with page.expect_navigation():
        page.keyboard.press("k")
    assert page.url == first
    actions: list[int] = []
    while "/change/" in page.url:
        before = page.url
        if len(actions) == 0:
            with page.expect_navigation():
                page.keyboard.press("a")
            actions.append(1)
        elif len(actions) == reject_at:
            page.keyboard.press("r")  # a check of the shortcut, not a step of the decision
            assert page.evaluate("document.activeElement.id") == "id_reason"
            page.locator("#id_reason").press_sequentially(REASON)  # its a's approve nothing
            shoot(page, f"{SHOTS}/03-reject-with-reason")
            with page.expect_navigation():
                page.get_by_role("button", name="Reject and next").click()
            actions.append(2)
        else:
            with page.expect_navigation():
                page.get_by_role("button", name="Approve and next").click()
            actions.append(1)
        assert page.url != before
    assert "The queue is empty" in page.locator(".messagelist").inner_text()
    shoot(page, f"{SHOTS}/04-queue-empty")
    return actions


@pytest.mark.django_db(transaction=True)
def test_admin_pages_pass_axe_and_an_approver_clears_fifty_requests_in_two_actions_each(
    live_server: LiveServer,
    chromium: ChromiumThread,
    admin_user: User,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: Callable[..., Certificate],
) -> None:
    revoked = issue_for(alice)
    revoke_certificate(certificate=revoked, reason=RevocationReason.SUPERSEDED)
    certificate = issue_for(bob)
    owners = [alice, bob]
    queue = [flows.submit_csr(owner=owners[n % 2], data=make_csr()) for n in range(QUEUE_LENGTH)]
    session = chromium.call(log_in, live_server.url)
    paths = [
        reverse("admin:index"),
        reverse("admin:enroll_enrollmentrequest_changelist"),
        reverse("admin:enroll_enrollmentrequest_change", args=[queue[0].pk]),
        reverse("admin:ca_certificate_changelist"),
        reverse("admin:ca_certificate_change", args=[certificate.pk]),
        reverse("admin:ca-revocation"),
        reverse("admin:ca_auditentry_changelist"),
    ]
    problems = chromium.call(audit_pages, session, paths)
    assert problems == [], "\n".join(problems)

    actions = chromium.call(clear_the_queue, session, reject_at=7)
    chromium.call(close_session, session)

    assert len(actions) == QUEUE_LENGTH
    assert max(actions) <= 2
    decided = {r.pk: r for r in EnrollmentRequest.objects.filter(pk__in=[q.pk for q in queue])}
    rejected = decided[queue[7].pk]
    assert (rejected.status, rejected.reason) == (RequestStatus.REJECTED, REASON)
    assert sorted(r.pk for r in decided.values() if r.status == RequestStatus.ISSUED) == sorted(
        q.pk for q in queue if q.pk != rejected.pk
    )
    assert LogEntry.objects.filter(content_type__model="enrollmentrequest").count() == QUEUE_LENGTH
