"""manage.py frontend_config nginx|apache --devices: the device server (EST and SCEP only, the client
certificate asked for but optional, forwarded as for certificate login, SCEP over plain HTTP too).

The text is checked here, and a real nginx (tests/harness/nginx.py) serves the generated block in front of a
small echo upstream that answers with the headers it was sent: only EST and SCEP paths are forwarded, smuggled
certificate headers are replaced, a 5.5 KB SCEP GET passes, and a TLS client is asked for a certificate
without being required to send one. The real EST enrollment through it is tests/realclients/test_est_nginx.py.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ca.models import CertificateAuthority
from ca.services.authorities import create_ca
from tests.harness.apache import DEBIAN_CONFDIR, debian_layout
from tests.harness.nginx import GeneratedNginx
from tests.harness.portal import portal_ca_bundle
from tests.harness.process import free_port, write_file
from tests.harness.programs import need_program
from tests.harness.tls import ServerCertificate, make_server_certificate


def render(kind: str, *args: str) -> str:
    out = StringIO()
    call_command("frontend_config", kind, *args, stdout=out)
    return out.getvalue()


def directives(text: str) -> list[str]:
    """The configuration's lines without comments and indentation."""
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


@pytest.fixture
def chain(db: None) -> list[CertificateAuthority]:
    root = create_ca(name="Device Root")
    issuing = create_ca(name="Device Issuing", parent=root, make_default=True)
    return [root, issuing]


# --- the generated text ----------------------------------------------------------------------------------


def test_the_nginx_device_server_serves_est_and_scep_only(chain: list[CertificateAuthority]) -> None:
    text = render("nginx", "--devices", "--upstream", "http://10.0.0.5:9000")
    lines = directives(text)
    assert "server_name devices.example.com;" in lines  # its own host name by default
    assert "listen 443 ssl;" in lines
    assert "listen 80;" in lines  # SCEP over plain HTTP
    assert "ssl_verify_client      optional;" in lines
    assert "ssl_verify_depth       2;" in lines
    for ca in chain:
        assert f"/pki/{ca.slug}.pem" in text
    # The portal decides on revocation from its database: no CRL to go stale and refuse every device.
    assert not [line for line in lines if line.startswith(("ssl_crl", "ssl_ocsp"))]
    assert "large_client_header_buffers 4 16k;" in lines
    for header in ("Verify", "Cert", "Serial", "DN"):
        assert any(line.startswith(f"proxy_set_header X-SSL-Client-{header} ") for line in lines)
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in lines
    locations = [line for line in lines if line.startswith("location")]
    assert locations == [
        "location /.well-known/est/ {",
        "location = /scep {",
        "location /scep/ {",
        "location / {",
    ]
    assert lines.count("proxy_pass http://10.0.0.5:9000;") == 3
    assert "return 404;" in lines
    assert "ssl_verify_client      on;" not in lines


def test_the_device_server_takes_its_own_name_and_ports(chain: list[CertificateAuthority]) -> None:
    lines = directives(
        render(
            "nginx", "--devices", "--server-name", "est.corp.example", "--port", "8443", "--http-port", "0"
        )
    )
    assert "server_name est.corp.example;" in lines
    assert [line for line in lines if line.startswith("listen")] == ["listen 8443 ssl;"]
    # Without --devices the application server is unchanged: certificate required, its own default name.
    application = directives(render("nginx"))
    assert "ssl_verify_client      on;" in application
    assert "server_name app.example.com;" in application


def test_the_apache_device_host_asks_for_a_certificate_and_forwards_it(
    chain: list[CertificateAuthority],
) -> None:
    text = render("apache", "--devices", "--port", "8443", "--http-port", "8080")
    lines = directives(text)
    assert "SSLVerifyClient       optional" in lines
    assert "SSLVerifyClient       require" not in lines
    assert not [line for line in lines if line.startswith("SSLCARevocation")]
    assert "Listen 8443 https" in lines
    assert "Listen 8080" in lines
    assert lines.count("<VirtualHost *:8443>") == 1
    assert lines.count("<VirtualHost *:8080>") == 1
    assert 'RequestHeader set X-SSL-Client-Cert   "%{SSL_CLIENT_CERT}s"' in lines
    assert 'RequestHeader set X-Forwarded-Proto   "http"' in lines
    assert lines.count("ProxyPass        /.well-known/est/ http://127.0.0.1:8080/.well-known/est/") == 2
    # Debian's ports.conf already listens on 80 and 443.
    default = directives(render("apache", "--devices"))
    assert not [line for line in default if line.startswith("Listen")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("node", "--devices"), "nginx or apache"),
        (("systemd", "--devices"), "nginx or apache"),
        (("nginx", "--devices", "--port", "8443", "--http-port", "8443"), "--http-port must differ"),
    ],
)
def test_it_refuses_a_device_server_it_cannot_make(
    chain: list[CertificateAuthority], args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        render(*args)


# --- a real nginx with the generated block ---------------------------------------------------------------


class Echo(BaseHTTPRequestHandler):
    """The upstream: answers 200 with the path and the request headers it got, as JSON."""

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True, slots=True)
class DeviceFront:
    nginx: GeneratedNginx
    tls: ServerCertificate
    http_port: int


@pytest.fixture
def device_front(chain: list[CertificateAuthority], tmp_path: Path) -> Iterator[DeviceFront]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    tls = make_server_certificate(tmp_path / "tls")
    ca_bundle = write_file(tmp_path / "client-ca.pem", portal_ca_bundle(chain))
    port, http_port = free_port(), free_port()
    block = render(
        "nginx",
        "--devices",
        "--server-name",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--upstream",
        f"http://127.0.0.1:{upstream.server_address[1]}",
        "--tls-cert",
        str(tls.cert_path),
        "--tls-key",
        str(tls.key_path),
        "--ca-bundle",
        str(ca_bundle),
    )
    nginx = GeneratedNginx(tmp_path / "nginx", server_block=block, port=port)  # nginx -t, then started
    try:
        with nginx:
            yield DeviceFront(nginx, tls, http_port)
    finally:
        upstream.shutdown()
        upstream.server_close()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str

    def echoed(self) -> dict[str, object]:
        assert self.status == 200, self
        seen = json.loads(self.body)
        assert isinstance(seen, dict)
        return seen


def get(front: DeviceFront, path: str, *, tls: bool, headers: dict[str, str] | None = None) -> Answer:
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context(cafile=str(front.tls.ca_path))
        connection = http.client.HTTPSConnection("127.0.0.1", front.nginx.port, context=context, timeout=10)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=10)
    try:
        connection.request("GET", path, headers={**(headers or {}), "Connection": "close"})
        response = connection.getresponse()
        return Answer(response.status, response.read().decode("utf-8", errors="replace"))
    finally:
        connection.close()


SMUGGLED = {"X-SSL-Client-Verify": "SUCCESS", "X-SSL-Client-Cert": "forged", "X-Forwarded-Proto": "https"}


@pytest.mark.real_client
@pytest.mark.real_server
def test_nginx_runs_the_device_server_and_forwards_only_est_and_scep(device_front: DeviceFront) -> None:
    # Only the EST and SCEP paths reach the portal, over HTTPS and plain HTTP alike.
    for tls in (True, False):
        for path in ("/", "/accounts/login/", "/admin/", "/pki/ocsp", "/scepx", "/.well-known/other"):
            assert get(device_front, path, tls=tls).status == 404, (path, tls)
        for path in ("/.well-known/est/cacerts", "/.well-known/est/dev-ca/cacerts", "/scep", "/scep/dev-ca"):
            assert get(device_front, path, tls=tls).echoed()["path"] == path

    # Over TLS without a client certificate (simpleenroll, SCEP): in, and nginx says NONE; the copies the
    # client sent are replaced.
    seen = get(device_front, "/.well-known/est/cacerts", tls=True, headers=SMUGGLED).echoed()["headers"]
    assert isinstance(seen, dict)
    assert seen["X-SSL-Client-Verify"] == "NONE"
    assert "X-SSL-Client-Cert" not in seen
    assert seen["X-Forwarded-Proto"] == "https"

    # Over plain HTTP: no certificate headers at all, the scheme said honestly (the portal refuses EST there).
    seen = get(device_front, "/.well-known/est/cacerts", tls=False, headers=SMUGGLED).echoed()["headers"]
    assert isinstance(seen, dict)
    assert not [name for name in seen if name.lower().startswith("x-ssl-client")]
    assert seen["X-Forwarded-Proto"] == "http"

    # certmonger's SCEP GET with an RSA-4096 request: a ~5.5 KB request line passes.
    query = "/scep?operation=PKIOperation&message=" + "A" * 5600
    assert get(device_front, query, tls=False).echoed()["path"] == query


@pytest.mark.real_client
@pytest.mark.real_server
def test_nginx_asks_tls_clients_for_a_certificate_from_the_portal_cas(
    device_front: DeviceFront, chain: list[CertificateAuthority]
) -> None:
    """``ssl_verify_client optional`` sends a CertificateRequest naming the portal's CAs (what a device's
    TLS stack picks its certificate by); the portal's own server never does (it has no such line)."""
    openssl = need_program("openssl")
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{device_front.nginx.port}", "-tls1_2"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    acceptable = result.stdout.split("Acceptable client certificate CA names", 1)
    assert len(acceptable) == 2, result.stdout + result.stderr
    names = acceptable[1].split("---", 1)[0]
    for ca in chain:
        assert ca.name in names, names


@pytest.mark.real_client
def test_debian_apache_accepts_the_generated_device_site(
    chain: list[CertificateAuthority], tmp_path: Path
) -> None:
    apache = need_program("apache2")
    if not (DEBIAN_CONFDIR / "apache2.conf").exists():
        pytest.fail("Debian's apache2 package has no /etc/apache2/apache2.conf")
    tls = make_server_certificate(tmp_path / "tls")
    ca_bundle = write_file(tmp_path / "client-ca.pem", portal_ca_bundle(chain))
    site = render(
        "apache",
        "--devices",
        "--port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--tls-cert",
        str(tls.cert_path),
        "--tls-key",
        str(tls.key_path),
        "--ca-bundle",
        str(ca_bundle),
    )
    confdir, env = debian_layout(tmp_path, site=site)
    result = subprocess.run(
        [apache, "-d", str(confdir), "-f", str(confdir / "apache2.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stderr
