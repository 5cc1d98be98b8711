"""Security headers on every page: a Content-Security-Policy without inline script or style, nosniff,
Referrer-Policy, Cross-Origin-Opener-Policy, Permissions-Policy, no framing; and templates with nothing
inline that such a policy would block (scripts, event handlers, style attributes or elements)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from tests.harness.chromium import ChromiumThread, close_session, open_session

if TYPE_CHECKING:
    from playwright.sync_api import Browser

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

#: Pages of every kind: anonymous, portal, key generation, SPKAC (the <keygen> form), admin.
PAGES: list[tuple[str, str]] = [
    ("anonymous", "accounts:login"),
    ("anonymous", "accounts:signup"),
    ("anonymous", "accounts:password-reset"),
    ("anonymous", "portal:help"),
    ("user", "portal:dashboard"),
    ("user", "portal:request-new"),
    ("user", "portal:keygen"),
    ("user", "portal:request-spkac"),
    ("user", "accounts:profile"),
    ("admin", "admin:index"),
    ("admin", "admin:enroll_enrollmentrequest_changelist"),
    ("admin", "admin:ca_certificate_changelist"),
    ("admin", "admin:axes_accessattempt_changelist"),
]

INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I), "inline <script>"),
    (re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I), "on... event handler attribute"),
    (re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"<style[\s>]", re.I), "<style> element"),
    (re.compile(r"(?:href|src|action)\s*=\s*[\"']?\s*javascript:", re.I), "javascript: URL"),
]


def directives(header: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.fixture
def as_who(alice: User, admin_user: User) -> dict[str, Client]:
    user, admin = Client(), Client()
    user.force_login(alice)
    admin.force_login(admin_user)
    return {"anonymous": Client(), "user": user, "admin": admin}


@pytest.mark.parametrize(("who", "name"), PAGES, ids=[name for _, name in PAGES])
def test_every_page_has_a_strict_content_security_policy(
    as_who: dict[str, Client], ca: Any, who: str, name: str
) -> None:
    response = as_who[who].get(reverse(name))
    assert response.status_code == 200
    policy = directives(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert "unsafe" not in response["Content-Security-Policy"]


@pytest.mark.parametrize(("who", "name"), PAGES, ids=[name for _, name in PAGES])
def test_no_page_has_anything_inline_that_the_policy_blocks(
    as_who: dict[str, Client], ca: Any, who: str, name: str
) -> None:
    html = as_who[who].get(reverse(name)).content.decode()
    found = [(what, pattern.search(html)) for pattern, what in INLINE]
    assert [(what, match.group(0)) for what, match in found if match] == []


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda path: str(path))
def test_no_template_has_anything_inline_that_the_policy_blocks(template: Path) -> None:
    text = template.read_text(encoding="utf-8")
    assert [(what, match.group(0)) for pattern, what in INLINE if (match := pattern.search(text))] == []


def test_the_other_security_headers_are_sent(client: Client, db: None) -> None:
    response = client.get(reverse("accounts:login"))
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    permissions = response["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in permissions


def test_public_pki_files_carry_the_headers_too(client: Client, ca: Any) -> None:
    response = client.get(f"/pki/{ca.slug}.crl")
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response["Content-Security-Policy"]


# --- HTTPS behind a front server -----------------------------------------------------------------------


@pytest.fixture
def https_settings(settings: Settings) -> Settings:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = django_settings.SECURE_REDIRECT_EXEMPT or [r"^pki/"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    return settings


def test_https_said_by_a_trusted_front_server_is_believed(https_settings: Settings, db: None) -> None:
    response = Client().get(
        reverse("accounts:login"), REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_PROTO="https"
    )
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=3600"


def test_https_said_by_anyone_else_is_not(https_settings: Settings, db: None) -> None:
    response = Client().get(
        reverse("accounts:login"), REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_PROTO="https"
    )
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


def test_crls_and_ca_certificates_stay_on_plain_http(https_settings: Settings, ca: Any) -> None:
    for path in (f"/pki/{ca.slug}.crl", f"/pki/{ca.slug}.crl.pem", f"/pki/{ca.slug}.crt", "/pki/health.json"):
        assert Client().get(path, REMOTE_ADDR="192.0.2.1").status_code == 200, path


# --- in a real browser ------------------------------------------------------------------------------


ADMIN_PAGES = ("/admin/", "/admin/enroll/enrollmentrequest/", "/admin/ca/certificate/revocation/", "/help/")


def open_admin_pages_and_break_the_policy(browser: Browser, base: str) -> tuple[list[str], list[str]]:
    """Log in to the admin, open pages with Django's own scripts; then set a style attribute from script
    (which style-src 'self' forbids): the violations before, and after."""
    session = open_session(browser, base)
    page = session.open("/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-password-123")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    for path in ADMIN_PAGES:
        session.open(path)
        page.wait_for_load_state("networkidle")
    before = list(session.csp_violations)
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    page.wait_for_timeout(500)
    after = list(session.csp_violations)
    session.csp_violations.clear()  # seen: close_session would fail on it
    close_session(browser, session)
    return before, after


@pytest.mark.real_client
@pytest.mark.real_server
def test_chromium_reports_no_violation_on_admin_pages_and_would_report_one(
    live_server: LiveServer,
    chromium: ChromiumThread,
    admin_user: User,
) -> None:
    before, after = chromium.call(open_admin_pages_and_break_the_policy, live_server.url)
    assert before == []
    assert len(after) >= 1
    assert "style-src" in " ".join(after)


# --- links in e-mails -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("https", "portal_url", "expected"),
    [
        (False, "", "http://pki.example.test/accounts/"),
        (True, "", "https://pki.example.test/accounts/"),  # the public URL stays http for CRLs and OCSP
        (True, "https://portal.example.test:8443", "https://portal.example.test:8443/accounts/"),
    ],
)
def test_links_with_tokens_in_e_mails_use_https_when_the_pages_do(
    client: Client, alice: User, settings: Settings, https: bool, portal_url: str, expected: str
) -> None:
    settings.ENROLL_PUBLIC_URL = "http://pki.example.test"
    settings.ENROLL_HTTPS = https
    settings.ENROLL_PORTAL_URL = portal_url
    client.post(reverse("accounts:password-reset"), {"email": "alice@example.com"})
    client.force_login(alice)
    alice.profile.email_verified_at = None  # so that a new verification link is sent
    alice.profile.save()
    client.post(reverse("accounts:resend-verification"))
    reset, verify = mail.outbox[-2:]
    assert re.search(rf"{re.escape(expected)}password/reset/\S+", str(reset.body))
    assert re.search(rf"{re.escape(expected)}verify/\S+", str(verify.body))
