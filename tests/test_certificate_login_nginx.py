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
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import quote, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from ca import services
from ca.models import Certificate, CertificateAuthority, RevocationReason
from tests.realclients import (  # noqa: F401  (fixtures)
    WAIT_SECONDS,
    ChromiumThread,
    IssuedClient,
    NginxError,
    NginxServer,
    chromium,
    client_certificate,
    issue_client,
    make_server_certificate,
    new_context,
    nginx_program,
    portal_ca_bundle,
    portal_crl_bundle,
    screenshot_dir,
    write_file,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext

pytestmark = [pytest.mark.real_client, pytest.mark.django_db(transaction=True)]

PROFILE = reverse("accounts:profile")
LOGIN = reverse("accounts:login")

_CONF = """\
# Private test instance (tests/test_certificate_login_nginx.py): everything under {dir}
daemon off;
master_process on;
worker_processes 1;
worker_shutdown_timeout 1s;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 64;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_timeout 0;

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_session_cache off;
        ssl_session_tickets off;

        ssl_client_certificate {dir}/client-ca.pem;
        ssl_crl {dir}/client-crl.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;

        # From manage.py frontend_config nginx --upstream <the live portal>:
{location}
    }}
}}
"""


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
    return "\n".join("    " + line if line else line for line in block.splitlines())


class PortalNginx(NginxServer):
    """:class:`NginxServer` requiring a client certificate, whose ``location /`` proxies to the portal."""

    def __init__(self, directory: Path, *, location: str, ca_bundle: bytes, crl_bundle: bytes) -> None:
        super().__init__(directory, ca_bundle=ca_bundle, crl_bundle=crl_bundle)
        self.location = location

    def start(self) -> Self:
        if self.process is not None:
            raise NginxError("this nginx was started already")
        self.program = nginx_program()
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        server = make_server_certificate(self.directory / "server")
        write_file(self.ca_path, self.ca_bundle)
        write_file(self.crl_path, self.crl_bundle or b"")
        self.conf_path.write_text(
            _CONF.format(
                dir=self.directory,
                port=self.port,
                server_cert=server.cert_path,
                server_key=server.key_path,
                location=self.location,
            )
        )
        checked = subprocess.run(
            self._argv("-t"), capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
        )
        if checked.returncode != 0:
            raise NginxError(f"nginx -t refused the configuration:\n{checked.stderr}")
        with (self.directory / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        try:
            self._wait_until(
                lambda: _listening(self.port) and bool(self.workers()), "nginx to accept connections"
            )
        except BaseException:
            self.stop()
            raise
        return self


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True, slots=True)
class Portal:
    """The live portal (trusting 127.0.0.1 as its front server) and the nginx in front of it."""

    port: int
    nginx: PortalNginx


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
    server = PortalNginx(
        tmp_path / "nginx",
        location=frontend_location(f"http://127.0.0.1:{port}"),
        ca_bundle=portal_ca_bundle(chain),
        crl_bundle=portal_crl_bundle(chain),
    )
    with server:
        yield Portal(port, server)


# --- Chromium -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    status: int
    url: str
    text: str


def open_context(browser: Browser, origin: str, client: IssuedClient) -> BrowserContext:
    entry = client_certificate(origin, cert_path=client.cert_path, key_path=client.key_path)
    return new_context(browser, certificates=[entry])


def goto(_browser: Browser, context: BrowserContext, url: str, screenshot: str | None = None) -> Seen:
    page = context.pages[0] if context.pages else context.new_page()
    response = page.goto(url, wait_until="load")
    assert response is not None
    if screenshot:
        page.screenshot(path=str(screenshot_dir() / f"{screenshot}.png"), full_page=True)
    return Seen(response.status, page.url, page.locator("body").inner_text())


def close(_browser: Browser, context: BrowserContext) -> None:
    context.close()


def test_chromium_through_nginx_signs_alice_in_until_her_certificate_is_revoked(
    portal: Portal,
    alice: User,
    bob: User,
    tmp_path: Path,
    chromium: ChromiumThread,  # noqa: F811
) -> None:
    alice_client = issue_client(alice, tmp_path)
    bob_client = issue_client(bob, tmp_path)
    profile = portal.nginx.origin + PROFILE
    context = chromium.call(open_context, portal.nginx.origin, alice_client)
    try:
        seen = chromium.call(goto, context, profile, "certificate-login-signed-in")
        assert seen.status == 200, seen.text
        assert seen.url == profile  # no detour through the login page
        assert "alice" in seen.text
        assert f"signed in with certificate {alice_client.certificate.serial}" in seen.text
        assert f"(issued by {alice_client.certificate.ca.name})" in seen.text
        assert "There is no sign-out with a client certificate" in seen.text

        again = chromium.call(goto, context, profile)
        assert "signed in with certificate" in again.text

        # Revoked in the portal. nginx keeps the CRL it loaded at start (no reload) and still says SUCCESS:
        # the portal itself refuses, at the very next request.
        services.revoke_certificate(
            certificate=alice_client.certificate, reason=RevocationReason.KEY_COMPROMISE
        )
        assert portal.nginx.crl_path.read_bytes() == portal.nginx.crl_bundle
        refused = chromium.call(goto, context, profile, "certificate-login-revoked")
        assert refused.status == 200, refused.text  # nginx let the TLS connection through ...
        assert urlsplit(refused.url).path == LOGIN  # ... and the portal sent an anonymous visitor to log in
        assert "signed in with certificate" not in refused.text
        assert "alice" not in refused.text
    finally:
        chromium.call(close, context)
    assert "certificate revoked" not in portal.nginx.error_log()

    # Another person's certificate through the same nginx is not affected.
    context = chromium.call(open_context, portal.nginx.origin, bob_client)
    try:
        seen = chromium.call(goto, context, profile)
        assert f"signed in with certificate {bob_client.certificate.serial}" in seen.text
        assert "bob" in seen.text
    finally:
        chromium.call(close, context)


# --- plain HTTP clients: straight to the portal, and through nginx with smuggled headers ------------------


def escaped(certificate: Certificate) -> str:
    """The certificate as nginx's ``$ssl_client_escaped_cert`` forwards it."""
    return quote(services.export_certificate(certificate=certificate, fmt="pem").content.decode(), safe="")


def as_nginx_sends(certificate: Certificate, *, spelling: str = "-") -> dict[str, str]:
    names = ("X-SSL-Client-Verify", "X-SSL-Client-Cert", "X-SSL-Client-Serial")
    values = ("SUCCESS", escaped(certificate), certificate.serial)
    return {name.replace("-", spelling): value for name, value in zip(names, values, strict=True)}


def text_of(html: str) -> str:
    """The page's words, without tags and with whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]*>", " ", html).split())


def straight(port: int, headers: dict[str, str], *, source: str) -> tuple[int, str]:
    """GET the profile from the live portal itself (no nginx), from the local address ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", PROFILE, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.getheader("Location") or text_of(response.read().decode())
    finally:
        connection.close()


def through_nginx(server: NginxServer, client: IssuedClient, headers: dict[str, str]) -> tuple[int, str]:
    """GET the profile through nginx presenting ``client``'s certificate, with extra request headers."""
    context = ssl.create_default_context(cafile=str(server.server_ca_path))
    context.load_cert_chain(str(client.cert_path), str(client.key_path))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        connection.request("GET", PROFILE, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.getheader("Location") or text_of(response.read().decode())
    finally:
        connection.close()


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
    services.revoke_certificate(certificate=bob_client.certificate, reason=RevocationReason.SUPERSEDED)
    status, location = through_nginx(portal.nginx, bob_client, {})
    assert (status, urlsplit(location).path) == (302, LOGIN)
