"""The whole journey in a real browser (Debian Chromium driven by Playwright) against a live portal and a
real nginx: sign up, verify the e-mail from the outbox, submit a CSR made by `openssl req`, an administrator
approves in Django admin, the user downloads the certificate, nginx accepts it; the administrator revokes it
on the revocation screen, nginx reloaded with the republished CRL refuses it.

Every page is saved as a screenshot at desktop and phone width under ``test-artifacts/screenshots/journey``
(or ``$ENROLL_ARTIFACTS_DIR/journey``).
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority
from ca.services.authorities import create_ca
from ca.services.export import ca_certificate_pem, export_certificate
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import need_program
from tests.harness.chromium import (
    BrowserSession,
    ChromiumThread,
    client_certificate,
    close_session,
    open_session,
    shoot,
    visit,
)
from tests.harness.nginx import NginxFactory

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-Passphrase-42"
#: The screenshots' folder under the screenshot directory.
SHOTS = "journey"


def sign_up(browser: Browser, base: str) -> BrowserSession:
    user = open_session(browser, base)
    page = user.open("/accounts/signup/")
    shoot(page, f"{SHOTS}/01-sign-up")
    page.fill("input[name=username]", "dora")
    page.fill("input[name=email]", "dora@example.com")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("form").filter(has=page.locator("input[name=password1]")).locator("[type=submit]").click()
    page.wait_for_load_state()
    assert "/accounts/signup/" not in page.url, page.content()
    shoot(page, f"{SHOTS}/02-after-sign-up")
    return user


def verify_and_submit(_browser: Browser, user: BrowserSession, link: str, csr_pem: str) -> str:
    page = user.open(link)
    shoot(page, f"{SHOTS}/03-verify-link")
    page.get_by_role("button", name="Yes, this is my address").click()
    page.wait_for_load_state()
    shoot(page, f"{SHOTS}/04-dashboard-verified")
    page = user.open("/requests/new/")
    shoot(page, f"{SHOTS}/05-new-request")
    page.fill("textarea[name=csr_text]", csr_pem)
    page.locator("input[type=submit][name=submit], button[type=submit][name=submit]").first.click()
    page.wait_for_load_state()
    assert re.search(r"/requests/\d+/$", page.url), page.content()
    shoot(page, f"{SHOTS}/06-request-submitted")
    return page.url


def admin_login(browser: Browser, base: str) -> BrowserSession:
    admin = open_session(browser, base)
    page = admin.open("/admin/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "admin-password-123")
    page.locator("input[type=submit]").click()
    page.wait_for_load_state()
    assert "/admin/login/" not in page.url
    return admin


def approve(_browser: Browser, admin: BrowserSession, request_id: int) -> None:
    page = admin.open(f"/admin/enroll/enrollmentrequest/{request_id}/change/")
    shoot(page, f"{SHOTS}/07-admin-request")
    page.get_by_role("button", name="Approve and issue").click()
    page.wait_for_load_state()
    shoot(page, f"{SHOTS}/08-admin-approved")


def download(_browser: Browser, user: BrowserSession, certificate_id: int, folder: Path) -> Path:
    page = user.open("/")
    shoot(page, f"{SHOTS}/09-dashboard-issued")
    page = user.open(f"/certificates/{certificate_id}/")
    shoot(page, f"{SHOTS}/10-certificate")
    with page.expect_download() as info:
        page.locator(f"a[href='/certificates/{certificate_id}/download/pem/']").click()
    target = folder / "dora.pem"
    info.value.save_as(str(target))
    return target


def revoke_on_screen(_browser: Browser, admin: BrowserSession, serial: str) -> None:
    page = admin.open("/admin/ca/certificate/revocation/")
    shoot(page, f"{SHOTS}/12-revocation-screen")
    page.fill("#id_serials", serial.lower())
    page.select_option("#id_reason", "key_compromise")
    page.get_by_role("button", name=re.compile(r"Review the revocation")).click()
    page.wait_for_load_state()
    shoot(page, f"{SHOTS}/13-revocation-confirm")
    page.get_by_role("button", name=re.compile(r"Yes, revoke 1 certificate")).click()
    page.wait_for_load_state()
    shoot(page, f"{SHOTS}/14-revoked")


def test_sign_up_to_revocation_in_a_real_browser_against_nginx(
    live_server: LiveServer,
    chromium: ChromiumThread,
    nginx_factory: NginxFactory,
    settings: Any,
    tmp_path: Path,
) -> None:
    openssl = need_program("openssl")
    settings.ENROLL_PUBLIC_URL = live_server.url
    User.objects.create_superuser("admin", "admin@example.com", "admin-password-123")
    ca: CertificateAuthority = create_ca(name="Journey CA", make_default=True)
    base = live_server.url

    user = chromium.call(sign_up, base)
    (message,) = [m for m in mail.outbox if "dora@example.com" in m.to]
    link = re.search(r"https?://\S+/accounts/verify/\S+", str(message.body))
    assert link is not None, message.body

    key_path, csr_path = tmp_path / "dora.key", tmp_path / "dora.csr"
    subprocess.run(
        [
            openssl,
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key_path),
            "-out",
            str(csr_path),
            "-subj",
            "/CN=whatever dora types",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    chromium.call(verify_and_submit, user, link.group(0), csr_path.read_text())
    request = EnrollmentRequest.objects.get(owner__username="dora")
    assert request.status == RequestStatus.SUBMITTED

    admin = chromium.call(admin_login, base)
    chromium.call(approve, admin, request.pk)
    request.refresh_from_db()
    assert request.status == RequestStatus.ISSUED, request.reason
    certificate: Certificate = request.certificate  # type: ignore[assignment]
    assert certificate.subject == "CN=dora,O=Enroll Portal"

    cert_path = chromium.call(download, user, certificate.pk, tmp_path)
    assert cert_path.read_bytes() == export_certificate(certificate=certificate, fmt="pem").content

    def crl_bundle() -> bytes:
        with urllib.request.urlopen(f"{base}/pki/{ca.slug}.crl.pem", timeout=30) as response:  # noqa: S310
            return bytes(response.read())

    server = nginx_factory(ca_bundle=ca_certificate_pem(ca), crl_bundle=crl_bundle())
    entry = client_certificate(server.origin, cert_path=cert_path, key_path=key_path)
    accepted = chromium.call(visit, server.url, [entry], shot=f"{SHOTS}/11-nginx-accepted")
    assert accepted.status == 200
    assert f"verify=SUCCESS serial={certificate.serial} " in accepted.text

    chromium.call(revoke_on_screen, admin, certificate.serial)
    assert hasattr(Certificate.objects.get(pk=certificate.pk), "revocation")
    server.update_crl(crl_bundle())
    refused = chromium.call(visit, server.url, [entry], shot=f"{SHOTS}/15-nginx-refused")
    assert refused.status == 400
    assert "certificate revoked" in server.error_log()
    chromium.call(close_session, user)
    chromium.call(close_session, admin)
