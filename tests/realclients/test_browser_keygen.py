"""Key generation in the browser, in a real browser (Debian Chromium driven by Playwright) against a live
portal: a verified user generates a key pair on portal:keygen (ECDSA P-256, and RSA 2048), saves the
encrypted PKCS#8 key file, submits only the CSR; an administrator approves; the certificate page builds
.p12 files in the browser (modern AES/PBKDF2/SHA-256 and legacy 3DES/SHA-1, from IndexedDB and from the
saved key file); OpenSSL reads them, the key inside matches the certificate and the saved key file, and
the .p12 authenticates against a real nginx. Plus: the plain-words message when WebCrypto is unavailable.

Screenshots go to ``test-artifacts/screenshots/keygen`` (or ``$ENROLL_ARTIFACTS_DIR/keygen``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import User
from pytest_django.live_server_helper import LiveServer

from accounts.services import mark_email_verified
from ca.models import Certificate, CertificateAuthority
from ca.services.authorities import create_ca
from ca.services.export import export_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus
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
from tests.harness.portal import serve_chain

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

#: The screenshots' folder under the screenshot directory.
SHOTS = "keygen"
PASSWORD = "a-long-Passphrase-42"
KEY_PASSPHRASE = "key file passphrase 1"
P12_PASSPHRASE = "p12 passphrase 2"
#: Generous: RSA key generation and 600 000 PBKDF2 rounds take a moment in a headless browser.
WAIT_MS = 60_000


def make_user(username: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD)
    mark_email_verified(user)
    return user


def log_in(browser: Browser, base: str, username: str) -> BrowserSession:
    """Log in on the portal's login page; the session keeps the login cookie, and IndexedDB with the key."""
    session = open_session(browser, base, accept_downloads=True)
    page = session.page
    page.set_default_timeout(WAIT_MS)
    session.open("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.wait_for_load_state()
    assert "/accounts/login/" not in page.url, page.content()
    return session


def generate_and_submit(
    _browser: Browser, session: BrowserSession, key_type: str, folder: Path
) -> tuple[str, Path]:
    """Generate the key in the page, save the encrypted key file, submit; return the request URL and file."""
    page = session.open("/requests/generate/")
    page.wait_for_selector("#keygen[data-state=ready]")
    shoot(page, f"{SHOTS}/{key_type}-01-keygen")
    page.check(f"#key-type-{key_type}")
    page.fill("#keygen-passphrase", KEY_PASSPHRASE)
    page.fill("#keygen-passphrase2", KEY_PASSPHRASE)
    page.click("#keygen-generate")
    page.wait_for_selector("#keygen[data-state=generated]")
    assert page.is_disabled("#keygen-submit"), "submitting must wait until the key file is saved"
    shoot(page, f"{SHOTS}/{key_type}-02-generated")
    with page.expect_download() as info:
        page.click("#keygen-save")
    key_path = folder / info.value.suggested_filename
    info.value.save_as(str(key_path))
    page.wait_for_selector("#keygen[data-state=saved]")
    page.click("#keygen-submit")
    page.wait_for_url(re.compile(r"/requests/\d+/$"))
    shoot(page, f"{SHOTS}/{key_type}-03-request-submitted")
    return page.url, key_path


def build_p12(
    _browser: Browser,
    session: BrowserSession,
    certificate_id: int,
    folder: Path,
    *,
    encryption: str,
    key_file: Path | None,
    shot: str,
) -> Path:
    """Make a .p12 on the certificate page: key from IndexedDB (``key_file=None``) or from the saved file."""
    page = session.open(f"/certificates/{certificate_id}/")
    expected = "key-from-file" if key_file is not None else "key-in-browser"
    page.wait_for_selector(f"#p12-builder[data-state={expected}]")
    if key_file is not None:
        page.set_input_files("#p12-keyfile", str(key_file))
        page.fill("#p12-key-passphrase", KEY_PASSPHRASE)
    page.check(f"#p12-{encryption}")
    page.fill("#p12-passphrase", P12_PASSPHRASE)
    page.fill("#p12-passphrase2", P12_PASSPHRASE)
    with page.expect_download() as info:
        page.click("#p12-build")
    target = folder / f"{shot}-{info.value.suggested_filename}"
    info.value.save_as(str(target))
    page.wait_for_selector("#p12-builder[data-state=built]")
    assert page.is_hidden("#p12-error"), page.inner_text("#p12-error")
    page.locator("#p12-builder").scroll_into_view_if_needed()
    shoot(page, f"{SHOTS}/{shot}")
    return target


def run(openssl: str, *args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run([openssl, *args], input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr.decode(errors='replace')}"
    return done.stdout


def public_key_der(pem: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of the first certificate or private key in ``pem``."""
    public: Any
    if b"-----BEGIN CERTIFICATE-----" in pem:
        public = x509.load_pem_x509_certificate(pem).public_key()
    else:
        public = serialization.load_pem_private_key(pem, password=None).public_key()
    return bytes(
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def read_p12(openssl: str, p12: Path, *, legacy: bool) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a .p12, read by ``openssl pkcs12``."""
    flags = ["-legacy"] if legacy else []
    certificate = run(
        openssl, "pkcs12", "-in", str(p12), "-clcerts", "-nokeys", "-passin", f"pass:{P12_PASSPHRASE}", *flags
    )
    key = run(
        openssl, "pkcs12", "-in", str(p12), "-nocerts", "-nodes", "-passin", f"pass:{P12_PASSPHRASE}", *flags
    )
    everything = run(
        openssl, "pkcs12", "-in", str(p12), "-nodes", "-passin", f"pass:{P12_PASSPHRASE}", *flags
    )
    assert everything.count(b"-----BEGIN CERTIFICATE-----") >= 2, "leaf and CA certificate"
    return certificate, key


def p12_algorithms(openssl: str, p12: Path, *, legacy: bool) -> str:
    flags = ["-legacy"] if legacy else []
    done = subprocess.run(
        [openssl, "pkcs12", "-in", str(p12), "-info", "-noout", "-passin", f"pass:{P12_PASSPHRASE}", *flags],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return (done.stdout + done.stderr).decode(errors="replace")


@pytest.mark.parametrize(("key_type", "description"), [("ec-p256", "ECDSA P-256"), ("rsa-2048", "RSA 2048")])
def test_key_generated_in_the_browser_becomes_a_working_p12(
    live_server: LiveServer,
    chromium: ChromiumThread,
    nginx_factory: NginxFactory,
    settings: Any,
    tmp_path: Path,
    key_type: str,
    description: str,
) -> None:
    openssl = need_program("openssl")
    settings.ENROLL_PUBLIC_URL = live_server.url
    ca: CertificateAuthority = create_ca(name="Keygen CA", make_default=True)
    admin = User.objects.create_superuser("admin", "admin@example.com", "admin-password-123")
    make_user("erin")
    base = live_server.url

    session = chromium.call(log_in, base, "erin")
    request_url, key_file = chromium.call(generate_and_submit, session, key_type, tmp_path)
    request = EnrollmentRequest.objects.get(owner__username="erin")
    assert request_url.endswith(f"/requests/{request.pk}/")
    assert request.status == RequestStatus.SUBMITTED
    assert request.kind == RequestKind.CSR
    assert request.key_description == description

    # The saved key file is an encrypted PKCS#8 that OpenSSL opens with the passphrase; it is this key.
    key_text = key_file.read_bytes()
    assert key_text.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    plain_key = run(openssl, "pkey", "-in", str(key_file), "-passin", f"pass:{KEY_PASSPHRASE}")
    key_info = run(openssl, "asn1parse", "-in", str(key_file))
    for algorithm in (b"PBES2", b"PBKDF2", b"aes-256-cbc", b"hmacWithSHA256"):
        assert algorithm in key_info, key_info
    request_key = x509.load_der_x509_csr(bytes(request.request_der)).public_key()
    assert public_key_der(plain_key) == request_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    approved = flows.approve(request_id=request.pk, by=admin)
    assert approved.status == RequestStatus.ISSUED, approved.reason
    certificate: Certificate = approved.certificate  # type: ignore[assignment]

    p12_modern = chromium.call(
        build_p12,
        session,
        certificate.pk,
        tmp_path,
        encryption="modern",
        key_file=None,
        shot=f"{key_type}-04-p12-modern",
    )
    p12_legacy = chromium.call(
        build_p12,
        session,
        certificate.pk,
        tmp_path,
        encryption="legacy",
        key_file=None,
        shot=f"{key_type}-05-p12-legacy",
    )
    chromium.call(close_session, session)
    # Another browser (no IndexedDB copy): the key comes from the saved file and its passphrase.
    elsewhere = chromium.call(log_in, base, "erin")
    p12_from_file = chromium.call(
        build_p12,
        elsewhere,
        certificate.pk,
        tmp_path,
        encryption="modern",
        key_file=key_file,
        shot=f"{key_type}-06-p12-from-key-file",
    )
    chromium.call(close_session, elsewhere)

    issued_pem = export_certificate(certificate=certificate, fmt="pem").content
    for p12, legacy in ((p12_modern, False), (p12_legacy, True), (p12_from_file, False)):
        cert_pem, key_pem = read_p12(openssl, p12, legacy=legacy)
        assert public_key_der(cert_pem) == public_key_der(issued_pem)
        assert public_key_der(key_pem) == public_key_der(issued_pem), "the key inside matches the certificate"
        assert public_key_der(key_pem) == public_key_der(plain_key), "and is the key saved earlier"
    modern_info = p12_algorithms(openssl, p12_modern, legacy=False)
    assert "PBES2, PBKDF2, AES-256-CBC" in modern_info, modern_info
    assert "MAC: sha256" in modern_info, modern_info
    legacy_info = p12_algorithms(openssl, p12_legacy, legacy=True)
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in legacy_info, legacy_info
    assert "MAC: sha1" in legacy_info, legacy_info

    server = serve_chain(nginx_factory, [ca])
    for p12, name in ((p12_modern, "07-nginx-modern-p12"), (p12_legacy, "08-nginx-legacy-p12")):
        entry = client_certificate(server.origin, pfx_path=p12, passphrase=P12_PASSPHRASE)
        seen = chromium.call(visit, server.url, [entry], shot=f"{SHOTS}/{key_type}-{name}")
        assert seen.status == 200, seen.text
        assert f"verify=SUCCESS serial={certificate.serial} " in seen.text


def open_without_webcrypto(browser: Browser, session: BrowserSession) -> tuple[bool, str, str]:
    """Open the key generation page with ``crypto.subtle`` removed, as on plain http to another host."""
    page = session.page
    page.add_init_script("Object.defineProperty(window.crypto, 'subtle', {value: undefined});")
    page = session.open("/requests/generate/")
    page.wait_for_selector("#keygen[data-state=insecure]")
    shoot(page, f"{SHOTS}/insecure-context")
    return page.is_visible("#keygen-form"), page.inner_text("#keygen-insecure"), page.inner_text("h1")


def test_the_page_says_plainly_when_the_browser_has_no_webcrypto(
    live_server: LiveServer,
    chromium: ChromiumThread,
    settings: Any,
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url
    make_user("finn")
    session = chromium.call(log_in, live_server.url, "finn")
    form_visible, message, heading = chromium.call(open_without_webcrypto, session)
    chromium.call(close_session, session)
    assert heading == "Generate a key in this browser"
    assert not form_visible
    assert "cannot make a key on this connection" in message
    assert "https" in message
    assert "localhost" in message
    host = live_server.url.split("://", 1)[1]
    assert host in message
    assert not EnrollmentRequest.objects.exists()
