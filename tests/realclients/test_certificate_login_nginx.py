"""Certificate login for real: Chromium presents alice's certificate to a private nginx
(``ssl_verify_client on``) that proxies to the live portal with the ``location`` block that
``manage.py frontend_config nginx`` prints. The profile page says she is signed in by certificate; once the
certificate is revoked in the portal, the next request logs in nobody, although nginx has not reloaded its
CRL and still says SUCCESS.

The same headers sent straight to the portal from an untrusted address, or spelled with underscores, log in
nobody; underscored copies smuggled through nginx are dropped there, dashed copies are replaced.
"""

from __future__ import annotations

import http.client
import io
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.export import export_certificate
from ca.services.revocation import revoke_certificate
from tests.harness.chromium import BrowserSession, ChromiumThread, close_session, open_session, shoot
from tests.harness.nginx import NginxServer
from tests.harness.portal import IssuedClient, issue_client, portal_ca_bundle, portal_crl_bundle

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

PROFILE = reverse("accounts:profile")
LOGIN = reverse("accounts:login")


def frontend_location(upstream: str) -> str:
    """The ``location / {...}`` block ``frontend_config nginx`` prints: proxy_set_header lines, proxy_pass."""
    out = io.StringIO()
    call_command("frontend_config", "nginx", "--upstream", upstream, stdout=out)
    match = re.search(r"^    location / \{\n.*?^    \}\n", out.getvalue(), re.DOTALL | re.MULTILINE)
    assert match is not None, out.getvalue()
    block = match.group(0)
    for header in ("X-SSL-Client-Verify", "X-SSL-Client-Cert", "X-SSL-Client-Serial"):
        assert f"proxy_set_header {header} " in block, block
    assert f"proxy_pass {upstream};" in block
    indented = "\n".join("    " + line if line else line for line in block.splitlines())
    return "        # From manage.py frontend_config nginx --upstream <the live portal>:\n" + indented


@dataclass(frozen=True, slots=True)
class Portal:
    """The live portal (trusting 127.0.0.1 as its front server) and the nginx in front of it."""

    port: int
    nginx: NginxServer


@pytest.fixture
def portal(
    ca: CertificateAuthority, live_server: LiveServer, settings: Settings, tmp_path: Path
) -> Iterator[Portal]:
    settings.ENROLL_CERT_LOGIN_ENABLED = True
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]  # nginx passes Host: 127.0.0.1
    port = urlsplit(live_server.url).port
    assert port is not None
    chain = [ca]
    server = NginxServer(
        tmp_path / "nginx",
        ca_bundle=portal_ca_bundle(chain),
        crl_bundle=portal_crl_bundle(chain),
        location=frontend_location(f"http://127.0.0.1:{port}"),
    )
    with server:
        yield Portal(port, server)


# --- Chromium -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    status: int
    url: str
    text: str


def goto(_browser: Browser, session: BrowserSession, path: str, shot: str | None = None) -> Seen:
    """Open ``path`` in the session (any HTTP status); where the browser ended up and what it shows."""
    page = session.page
    response = page.goto(session.base + path, wait_until="load")
    assert response is not None
    if shot:
        shoot(page, shot)
    return Seen(response.status, page.url, page.locator("body").inner_text())


def test_chromium_through_nginx_signs_alice_in_until_her_certificate_is_revoked(
    portal: Portal,
    alice: User,
    bob: User,
    tmp_path: Path,
    chromium: ChromiumThread,
) -> None:
    alice_client = issue_client(alice, tmp_path)
    bob_client = issue_client(bob, tmp_path)
    origin = portal.nginx.origin
    profile = origin + PROFILE
    session = chromium.call(open_session, origin, certificates=[alice_client.client_certificate(origin)])
    try:
        seen = chromium.call(goto, session, PROFILE, "certificate-login-signed-in")
        assert seen.status == 200, seen.text
        assert seen.url == profile  # no detour through the login page
        assert "alice" in seen.text
        assert f"signed in with certificate {alice_client.certificate.serial}" in seen.text
        assert f"(issued by {alice_client.certificate.ca.name})" in seen.text
        assert "There is no sign-out with a client certificate" in seen.text

        again = chromium.call(goto, session, PROFILE)
        assert "signed in with certificate" in again.text

        # Revoked in the portal. nginx keeps the CRL it loaded at start (no reload) and still says SUCCESS:
        # the portal itself refuses, at the very next request.
        revoke_certificate(certificate=alice_client.certificate, reason=RevocationReason.KEY_COMPROMISE)
        assert portal.nginx.crl_path.read_bytes() == portal.nginx.crl_bundle
        refused = chromium.call(goto, session, PROFILE, "certificate-login-revoked")
        assert refused.status == 200, refused.text  # nginx let the TLS connection through ...
        assert urlsplit(refused.url).path == LOGIN  # ... and the portal sent an anonymous visitor to log in
        assert "signed in with certificate" not in refused.text
        assert "alice" not in refused.text
    finally:
        chromium.call(close_session, session)
    assert "certificate revoked" not in portal.nginx.error_log()

    # Another person's certificate through the same nginx is not affected.
    session = chromium.call(open_session, origin, certificates=[bob_client.client_certificate(origin)])
    try:
        seen = chromium.call(goto, session, PROFILE)
        assert f"signed in with certificate {bob_client.certificate.serial}" in seen.text
        assert "bob" in seen.text
    finally:
        chromium.call(close_session, session)


# --- plain HTTP clients: straight to the portal, and through nginx with smuggled headers ------------------


def escaped(certificate: Certificate) -> str:
    """The certificate as nginx's ``$ssl_client_escaped_cert`` forwards it."""
    return quote(export_certificate(certificate=certificate, fmt="pem").content.decode(), safe="")


def as_nginx_sends(certificate: Certificate, *, spelling: str = "-") -> dict[str, str]:
    names = ("X-SSL-Client-Verify", "X-SSL-Client-Cert", "X-SSL-Client-Serial")
    values = ("SUCCESS", escaped(certificate), certificate.serial)
    return {name.replace("-", spelling): value for name, value in zip(names, values, strict=True)}


def text_of(html: str) -> str:
    """The page's words, without tags and with whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]*>", " ", html).split())


def get_profile(connection: http.client.HTTPConnection, headers: dict[str, str]) -> tuple[int, str]:
    """GET the profile with extra request headers: the status, and the redirect target or the page's words."""
    try:
        connection.request("GET", PROFILE, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.getheader("Location") or text_of(response.read().decode())
    finally:
        connection.close()


def straight(port: int, headers: dict[str, str], *, source: str) -> tuple[int, str]:
    """GET the profile from the live portal itself (no nginx), from the local address ``source``."""
    return get_profile(
        http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0)), headers
    )


def through_nginx(server: NginxServer, client: IssuedClient, headers: dict[str, str]) -> tuple[int, str]:
    """GET the profile through nginx presenting ``client``'s certificate, with extra request headers."""
    context = ssl.create_default_context(cafile=str(server.server_ca_path))
    context.load_cert_chain(str(client.cert_path), str(client.key_path))
    return get_profile(
        http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10), headers
    )


def test_headers_sent_straight_or_smuggled_log_in_nobody(
    portal: Portal, alice: User, bob: User, tmp_path: Path
) -> None:
    alice_client = issue_client(alice, tmp_path)
    bob_client = issue_client(bob, tmp_path)
    alice_headers = as_nginx_sends(alice_client.certificate)

    # Control: from the trusted address, the dashed headers do log alice in (anybody on 127.0.0.1 could: that
    # is why only the front server's address may be trusted, and the portal should listen only there).
    status, body = straight(portal.port, alice_headers, source="127.0.0.1")
    assert status == 200, body
    assert f"signed in with certificate {alice_client.certificate.serial}" in body

    # The same headers from another address (127.0.0.2 is loopback too, but not a trusted proxy).
    status, location = straight(portal.port, alice_headers, source="127.0.0.2")
    assert (status, urlsplit(location).path) == (302, LOGIN)

    # Spelled with underscores, from the trusted address: the WSGI server drops them (Django's own server;
    # gunicorn >= 22 does the same), so nothing reaches the middleware.
    underscored = as_nginx_sends(alice_client.certificate, spelling="_")
    assert "X_SSL_Client_Verify" in underscored
    status, location = straight(portal.port, underscored, source="127.0.0.1")
    assert (status, urlsplit(location).path) == (302, LOGIN)

    # Through nginx with bob's certificate, trying to pass as alice in both spellings: nginx replaces the
    # dashed headers with bob's and drops the underscored ones. Bob is who he is.
    smuggled = {**alice_headers, **underscored, "X-SSL-Client-DN": "CN=alice"}
    status, body = through_nginx(portal.nginx, bob_client, smuggled)
    assert status == 200, body
    assert f"signed in with certificate {bob_client.certificate.serial}" in body
    assert alice_client.certificate.serial not in body

    # A revoked certificate through nginx (CRL not reloaded yet): nginx says SUCCESS, the portal refuses.
    revoke_certificate(certificate=bob_client.certificate, reason=RevocationReason.SUPERSEDED)
    status, location = through_nginx(portal.nginx, bob_client, {})
    assert (status, urlsplit(location).path) == (302, LOGIN)
