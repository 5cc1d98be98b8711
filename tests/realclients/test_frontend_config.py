"""manage.py frontend_config: configurations that real servers accept."""

from __future__ import annotations

import re
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from ca.models import CertificateAuthority
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.export import ca_certificate_pem, crl_pem
from tests.conftest import need_program
from tests.harness.tls import make_server_certificate

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render(kind: str, *args: str) -> str:
    out = StringIO()
    call_command("frontend_config", kind, *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def chain(db: None) -> list[CertificateAuthority]:
    root = create_ca(name="Front Root")
    issuing = create_ca(name="Front Issuing", parent=root, make_default=True)
    return [root, issuing]


def test_it_needs_a_ca(db: None) -> None:
    with pytest.raises(CommandError, match="no CA yet"):
        render("nginx")


def test_the_nginx_config_trusts_every_ca_and_clears_forwarded_headers(
    chain: list[CertificateAuthority],
) -> None:
    text = render("nginx", "--server-name", "app.example.org", "--upstream", "http://10.0.0.5:9000")
    for ca in chain:
        assert f"/pki/{ca.slug}.pem" in text
    assert "ssl_verify_client      on;" in text
    assert "ssl_verify_depth       2;" in text
    assert f"ssl_ocsp_responder {chain[1].public_url('ca:ocsp')};" in text
    for header in ("Verify", "Cert", "Serial", "DN"):
        assert f"proxy_set_header X-SSL-Client-{header}" in text
    assert "proxy_pass http://10.0.0.5:9000;" in text


@pytest.mark.real_client
@override_settings(ENROLL_PUBLIC_URL="http://127.0.0.1:8000")  # nginx resolves the OCSP host at load time
def test_nginx_accepts_the_generated_config(chain: list[CertificateAuthority], tmp_path: Path) -> None:
    nginx = need_program("nginx")
    server_certificate = make_server_certificate(tmp_path / "tls")
    cert, key = server_certificate.cert_path, server_certificate.key_path
    ca_bundle = tmp_path / "ca.pem"
    ca_bundle.write_bytes(b"".join(ca_certificate_pem(ca) for ca in chain))
    crl_bundle = tmp_path / "crl.pem"
    crl_bundle.write_bytes(b"".join(crl_pem(current_crl(ca=ca)) for ca in chain))
    server = (
        render(
            "nginx",
            "--port",
            "8443",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--ca-bundle",
            str(ca_bundle),
            "--crl-bundle",
            str(crl_bundle),
        )
        .replace("# ssl_ocsp ", "ssl_ocsp ")
        .replace("# ssl_ocsp_responder", "ssl_ocsp_responder")
    )
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    temp_paths = "".join(f" {name}_temp_path {tmp_path}/{name};\n" for name in TEMP_PATHS)
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n{temp_paths}{server}\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_apache_config_unsets_client_copies_before_setting(chain: list[CertificateAuthority]) -> None:
    text = render("apache")
    assert "SSLCARevocationCheck  chain" in text
    assert "SSLVerifyClient       require" in text
    for header in ("Verify", "Cert", "Serial", "DN"):
        unset = re.search(rf"RequestHeader unset X-SSL-Client-{header} +early", text)
        assign = re.search(rf"RequestHeader set X-SSL-Client-{header} ", text)
        assert unset is not None
        assert assign is not None
        assert unset.start() < assign.start()


@pytest.mark.real_client
def test_the_node_server_is_valid_javascript(chain: list[CertificateAuthority], tmp_path: Path) -> None:
    node = need_program("node")
    script = tmp_path / "server.js"
    script.write_text(render("node"))
    result = subprocess.run(
        [node, "--check", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "setSecureContext" in script.read_text()


def test_the_systemd_units_sync_every_crl_of_the_chain(chain: list[CertificateAuthority]) -> None:
    text = render("systemd", "--reload-command", "nginx -s reload", "--node", "web1")
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    for ca in chain:
        assert f"--url {ca.public_url('ca:crl-pem')}" in exec_start
    assert "--node web1" in exec_start
    assert "--reload-command 'nginx -s reload'" in exec_start
    assert "OnUnitActiveSec=1min" in text
