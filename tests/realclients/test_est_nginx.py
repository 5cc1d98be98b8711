"""EST (RFC 7030) for real: curl and openssl, exactly as the RFC's examples use them, against the device
server ``manage.py frontend_config nginx --devices`` prints, run by a real nginx (TLS, ``ssl_verify_client
optional``) in front of the live portal.

One nginx, one device journey: ``cacerts``; ``simpleenroll`` with a pre-approved code (the certificate back
at once); with the owner's own code (202 and Retry-After, approved in the flow, the same request again
brings the certificate); ``simplereenroll`` with the current certificate as the TLS client certificate (a
new certificate, the same subject); re-enrollment with a revoked certificate refused; EST over the device
server's plain-HTTP port refused; SCEP's GetCACaps through the same server, over HTTP and HTTPS. Every
certificate verifies against the chain from ``cacerts``, passes pkilint and carries the account's subject,
whatever the device asked for.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.authorities import create_ca
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest
from tests.harness.nginx import GeneratedNginx
from tests.harness.portal import portal_ca_bundle
from tests.harness.process import free_port, write_file
from tests.harness.programs import need_program
from tests.harness.tls import ServerCertificate, make_server_certificate

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]


@dataclass(frozen=True, slots=True)
class DeviceServer:
    """The generated device server in a real nginx, in front of the live portal."""

    nginx: GeneratedNginx
    tls: ServerCertificate
    http_port: int
    folder: Path

    @property
    def est(self) -> str:
        return f"https://127.0.0.1:{self.nginx.port}/.well-known/est"


@pytest.fixture
def chain(ca: CertificateAuthority) -> list[CertificateAuthority]:
    """A root and the default issuing CA under it: ``cacerts`` has a chain to give."""
    return [ca, create_ca(name="Device Issuing CA", parent=ca, make_default=True)]


@pytest.fixture
def device_server(
    chain: list[CertificateAuthority], live_server: LiveServer, settings: Settings, tmp_path: Path
) -> Iterator[DeviceServer]:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]  # nginx, for its X-Forwarded-Proto and X-SSL-Client-*
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    settings.ENROLL_RATE_LIMITS_ENABLED = False
    upstream = urlsplit(live_server.url)
    tls = make_server_certificate(tmp_path / "tls")
    ca_bundle = write_file(tmp_path / "client-ca.pem", portal_ca_bundle(chain))
    port, http_port = free_port(), free_port()
    out = io.StringIO()
    call_command(
        "frontend_config",
        "nginx",
        "--devices",
        *("--server-name", "127.0.0.1", "--port", str(port), "--http-port", str(http_port)),
        *("--upstream", f"http://127.0.0.1:{upstream.port}", "--ca-bundle", str(ca_bundle)),
        *("--tls-cert", str(tls.cert_path), "--tls-key", str(tls.key_path)),
        stdout=out,
    )
    device = tmp_path / "device"
    device.mkdir()
    with GeneratedNginx(tmp_path / "nginx", server_block=out.getvalue(), port=port) as nginx:
        yield DeviceServer(nginx, tls, http_port, device)


# --- the device's side: a shell with curl and openssl ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: str
    body: str


def sh(server: DeviceServer, script: str) -> str:
    """Run ``script`` with bash in the device's folder (``$SERVER_CA``: the TLS server's CA); its stdout."""
    need_program("curl")
    need_program("openssl")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=server.folder,
        env={"PATH": "/usr/bin:/bin", "SERVER_CA": str(server.tls.ca_path), "LANG": "C"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def curl(server: DeviceServer, url: str, *options: str, out: str = "reply.b64") -> Reply:
    """``curl`` as RFC 7030's examples use it (the server checked against its CA), the answer kept."""
    quoted = " ".join(f"'{option}'" for option in options)
    status = sh(
        server,
        f'rm -f {out} headers.txt; curl -sS --cacert "$SERVER_CA" -D headers.txt -o {out} '
        f"-w '%{{http_code}}' {quoted} '{url}'",
    )
    folder = server.folder
    body = (folder / out).read_text() if (folder / out).exists() else ""
    return Reply(int(status), (folder / "headers.txt").read_text(), body)


def new_key_and_csr(server: DeviceServer, name: str, *, subject: str) -> None:
    """The key made on the device (it never leaves), and its request in base64 DER, as RFC 7030 sends it."""
    sh(
        server,
        f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key "
        f"-subj '{subject}' -outform DER | base64 > {name}.csr.b64",
    )


def certificate_from(server: DeviceServer, reply_file: str, name: str) -> str:
    """``openssl base64 -d | openssl pkcs7 -inform DER -print_certs``: the certificate, saved as
    ``name``.pem (through ``openssl x509``: the PEM alone, without print_certs' subject lines); its subject
    and serial. (The body's base64 lines end in CRLF, as RFC 2045 has them;
    ``openssl base64 -d`` and ``base64 -di`` read that, coreutils' plain ``base64 -d`` does not.)"""
    return sh(
        server,
        f"openssl base64 -d -in {reply_file} | openssl pkcs7 -inform DER -print_certs | "
        f"openssl x509 -out {name}.pem && "
        f"openssl x509 -in {name}.pem -noout -subject -serial -nameopt RFC2253",
    )


def check_issued(server: DeviceServer, name: str, owner: User) -> Certificate:
    """It verifies against the chain ``cacerts`` gave, pkilint finds nothing, its subject is the account's;
    the portal's record of it, which a device request of the owner's made."""
    verified = sh(server, f"openssl verify -CAfile chain.pem {name}.pem")
    assert verified.strip() == f"{name}.pem: OK"
    lint = subprocess.run(
        [need_program("lint_pkix_cert"), "lint", "-s", "WARNING", str(server.folder / f"{name}.pem")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    serial = sh(server, f"openssl x509 -in {name}.pem -noout -serial").strip().removeprefix("serial=")
    certificate = Certificate.objects.get(serial=serial)
    assert certificate.owner == owner
    subject = sh(server, f"openssl x509 -in {name}.pem -noout -subject -nameopt RFC2253")
    assert f"CN={owner.get_username()}" in subject, subject
    assert "router" not in subject  # what the device asked for is ignored
    return certificate


# --- the journey ------------------------------------------------------------------------------------------


def test_a_device_enrolls_and_re_enrolls_over_est_through_the_generated_nginx(
    device_server: DeviceServer, chain: list[CertificateAuthority], alice: User, admin_user: User
) -> None:
    server = device_server

    # /cacerts: the chain as a certs-only PKCS#7, base64.
    reply = curl(server, f"{server.est}/cacerts", out="cacerts.b64")
    assert reply.status == 200, reply
    assert "application/pkcs7-mime" in reply.headers.lower()
    sh(server, "openssl base64 -d -in cacerts.b64 | openssl pkcs7 -inform DER -print_certs -out chain.pem")
    chain_subjects = sh(server, "grep -c 'BEGIN CERTIFICATE' chain.pem")
    assert int(chain_subjects) == len(chain)

    # simpleenroll with a code an approver made for alice's router: the certificate at once.
    code_row, code = flows.create_enrollment_code(
        owner=alice, created_by=admin_user, device_name="router-1", pre_approve=True
    )
    assert code_row.pre_approved
    new_key_and_csr(server, "router", subject="/CN=router-1/O=Not Alice")
    reply = curl(
        server,
        f"{server.est}/simpleenroll",
        *("-u", f"router-1:{code}", "-H", "Content-Type: application/pkcs10"),
        *("--data-binary", "@router.csr.b64"),
    )
    assert reply.status == 200, reply
    certificate_from(server, "reply.b64", "router")
    first = check_issued(server, "router", alice)

    # The same code again (single use): refused, nothing issued.
    issued_before = Certificate.objects.count()
    new_key_and_csr(server, "other", subject="/CN=router-2")
    reply = curl(
        server,
        f"{server.est}/simpleenroll",
        *("-u", f"router-1:{code}", "-H", "Content-Type: application/pkcs10"),
        *("--data-binary", "@other.csr.b64"),
    )
    assert reply.status in (401, 403), reply
    assert Certificate.objects.count() == issued_before

    # alice's own code: the request waits for approval (202, Retry-After); approved in the flow by an
    # approver, the device's next try (the same request) brings the certificate.
    own_row, own_code = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="kiosk")
    assert not own_row.pre_approved
    new_key_and_csr(server, "kiosk", subject="/CN=kiosk")
    enroll_kiosk = (
        f"{server.est}/simpleenroll",
        *("-u", f"kiosk:{own_code}", "-H", "Content-Type: application/pkcs10"),
        *("--data-binary", "@kiosk.csr.b64"),
    )
    reply = curl(server, *enroll_kiosk)
    assert reply.status == 202, reply
    assert "retry-after:" in reply.headers.lower(), reply.headers
    waiting = EnrollmentRequest.objects.get(enrollment_code=own_row)
    assert waiting.certificate is None
    assert curl(server, *enroll_kiosk).status == 202  # polling again changes nothing
    assert EnrollmentRequest.objects.filter(enrollment_code=own_row).count() == 1
    approved = flows.approve(request_id=waiting.pk, by=admin_user)
    assert approved.certificate is not None, approved.reason
    reply = curl(server, *enroll_kiosk)
    assert reply.status == 200, reply
    certificate_from(server, "reply.b64", "kiosk")
    assert check_issued(server, "kiosk", alice) == approved.certificate

    # simplereenroll: the router's current certificate as the TLS client certificate, a new key.
    new_key_and_csr(server, "router2", subject="/CN=router-1")
    reply = curl(
        server,
        f"{server.est}/simplereenroll",
        *("--cert", "router.pem", "--key", "router.key", "-H", "Content-Type: application/pkcs10"),
        *("--data-binary", "@router2.csr.b64"),
    )
    assert reply.status == 200, reply
    certificate_from(server, "reply.b64", "router2")
    second = check_issued(server, "router2", alice)
    assert second.serial != first.serial
    assert second.subject == first.subject

    # Re-enrollment with a revoked certificate: refused (nginx has no CRL; the portal decides from its
    # database), nothing issued.
    revoke_certificate(certificate=second, reason=RevocationReason.KEY_COMPROMISE)
    issued_before = Certificate.objects.count()
    new_key_and_csr(server, "router3", subject="/CN=router-1")
    reply = curl(
        server,
        f"{server.est}/simplereenroll",
        *("--cert", "router2.pem", "--key", "router2.key", "-H", "Content-Type: application/pkcs10"),
        *("--data-binary", "@router3.csr.b64"),
    )
    assert reply.status in (401, 403), reply
    assert "revoked" in reply.body.lower(), reply
    assert Certificate.objects.count() == issued_before

    # EST over the device server's plain-HTTP port (meant for SCEP): refused with a plain-text reason,
    # and the code it carried is not used.
    http_row, http_code = flows.create_enrollment_code(
        owner=alice, created_by=admin_user, device_name="router-http", pre_approve=True
    )
    reply = curl(
        server,
        f"http://127.0.0.1:{server.http_port}/.well-known/est/simpleenroll",
        *("-u", f"router-http:{http_code}", "-H", "Content-Type: application/pkcs10"),
        *("--data-binary", "@router3.csr.b64"),
    )
    assert 400 <= reply.status < 500, reply
    assert "https" in reply.body.lower(), reply
    assert "text/plain" in reply.headers.lower(), reply.headers
    assert Certificate.objects.count() == issued_before
    http_row.refresh_from_db()
    assert http_row.uses == 0

    # The same device server carries SCEP, over plain HTTP too (its CMS envelope protects it).
    for origin in (f"http://127.0.0.1:{server.http_port}", f"https://127.0.0.1:{server.nginx.port}"):
        for path in ("/scep", f"/scep/{chain[-1].slug}"):
            reply = curl(server, f"{origin}{path}?operation=GetCACaps", out="caps.txt")
            assert reply.status == 200, (origin, path, reply)
            assert {"POSTPKIOperation", "SHA-256", "AES", "Renewal"} <= set(reply.body.split()), reply
    assert "[error]" not in server.nginx.error_log()
