"""manage.py frontend_config: configurations that real servers accept."""

from __future__ import annotations

import re
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from ca.models import CertificateAuthority
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.export import ca_certificate_pem, crl_pem
from tests.conftest import need_program
from tests.harness.apache import DEBIAN_CONFDIR, debian_layout
from tests.harness.process import end_process, free_port, read_text, write_file
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
    # CRL sync is the default; OCSP is there commented, with the one responder URL.
    assert "    ssl_crl " in text
    assert "    # ssl_ocsp           on;" in text
    assert f"# ssl_ocsp_responder {settings.ENROLL_PUBLIC_URL}/pki/ocsp;" in text
    for header in ("Verify", "Cert", "Serial", "DN"):
        assert f"proxy_set_header X-SSL-Client-{header}" in text
    assert "proxy_pass http://10.0.0.5:9000;" in text


@pytest.mark.parametrize("mode", ["ocsp", "both"])
@override_settings(ENROLL_PUBLIC_URL="http://192.0.2.10")
def test_with_ocsp_the_nginx_config_checks_the_whole_chain_at_the_one_responder(
    mode: str, chain: list[CertificateAuthority]
) -> None:
    text = render("nginx", "--revocation", mode)
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "ssl_ocsp           on;" in lines
    assert "ssl_ocsp_responder http://192.0.2.10/pki/ocsp;" in lines
    assert "ssl_ocsp_cache     shared:enroll_ocsp:10m;" in lines
    assert "ssl_verify_depth       2;" in lines
    assert not [line for line in lines if line.startswith("resolver")]  # an IP address needs none
    assert any(line.startswith("ssl_crl ") for line in lines) == (mode == "both")
    # What a portal outage does, said in the file itself.
    assert "refuses EVERY client" in text
    assert "(7 days)" in text


@override_settings(ENROLL_PUBLIC_URL="https://portal.example.org")
def test_with_ocsp_a_responder_host_name_needs_a_resolver(chain: list[CertificateAuthority]) -> None:
    with pytest.raises(CommandError, match="--resolver"):
        render("nginx", "--revocation", "ocsp")
    text = render("nginx", "--revocation", "ocsp", "--resolver", "127.0.0.53")
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "resolver           127.0.0.53;" in lines
    assert "ssl_ocsp_responder https://portal.example.org/pki/ocsp;" in lines
    render("nginx")  # CRL only: no resolver asked for


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
    server = render(
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
        "--revocation",
        "both",
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
    for header in ("X-SSL-Client-Verify", "X-SSL-Client-Cert", "X-SSL-Client-Serial", "X-SSL-Client-DN",
                   "X-Forwarded-Proto"):  # fmt: skip
        unset = re.search(rf"RequestHeader unset {header} +early", text)
        assign = re.search(rf"RequestHeader set {header} ", text)
        assert unset is not None
        assert assign is not None
        assert unset.start() < assign.start()
    assert 'RequestHeader set X-Forwarded-Proto   "https"' in text
    assert "ProxyPreserveHost On" in text
    assert "a2enmod ssl headers proxy proxy_http" in text


def test_the_apache_config_listens_unless_debian_already_does(chain: list[CertificateAuthority]) -> None:
    """Debian's ports.conf says ``Listen 443`` once mod_ssl is on, and a second one is a syntax error."""
    assert re.search(r"^Listen 8443 https$", render("apache", "--port", "8443"), re.MULTILINE)
    assert not re.search(r"^Listen", render("apache"), re.MULTILINE)
    assert "# Listen 443 https" in render("apache")


@pytest.mark.real_client
@pytest.mark.parametrize("port", ["443", "8443"])
def test_debian_apache_accepts_the_generated_site_with_the_modules_it_names(
    port: str, chain: list[CertificateAuthority], tmp_path: Path
) -> None:
    """What a person does on Debian, in a copy of /etc/apache2: the site in sites-enabled, the modules
    of the config's ``a2enmod`` line enabled (a2enmod also enables what ssl depends on), ``apache2 -t``."""
    apache = need_program("apache2")
    if not (DEBIAN_CONFDIR / "apache2.conf").exists():
        pytest.fail("Debian's apache2 package has no /etc/apache2/apache2.conf")
    server_certificate = make_server_certificate(tmp_path / "tls")
    ca_bundle = tmp_path / "ca.pem"
    ca_bundle.write_bytes(b"".join(ca_certificate_pem(ca) for ca in chain))
    crl_bundle = tmp_path / "crl.pem"
    crl_bundle.write_bytes(b"".join(crl_pem(current_crl(ca=ca)) for ca in chain))
    site = render(
        "apache",
        "--port",
        port,
        "--tls-cert",
        str(server_certificate.cert_path),
        "--tls-key",
        str(server_certificate.key_path),
        "--ca-bundle",
        str(ca_bundle),
        "--crl-bundle",
        str(crl_bundle),
    )
    confdir, env = debian_layout(tmp_path, site=site)  # ports.conf as Debian has it: Listen 80, 443
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


@pytest.mark.real_client
def test_the_generated_node_server_swaps_in_a_renamed_crl_within_a_second(
    chain: list[CertificateAuthority], tmp_path: Path
) -> None:
    """The generated ``node.js`` as it is, run: enroll-crl-sync replaces the CRL file by rename; the server
    sees it within its 500 ms poll (a 5 s poll alone would break the 5 s target of a revocation)."""
    node = need_program("node")
    server_certificate = make_server_certificate(tmp_path / "tls")
    ca_bundle = write_file(tmp_path / "ca.pem", b"".join(ca_certificate_pem(ca) for ca in chain))
    crl_bundle = write_file(tmp_path / "crl.pem", b"".join(crl_pem(current_crl(ca=ca)) for ca in chain))
    port = free_port()
    script = tmp_path / "server.js"
    script.write_text(
        render(
            "node",
            "--port",
            str(port),
            "--tls-cert",
            str(server_certificate.cert_path),
            "--tls-key",
            str(server_certificate.key_path),
            "--ca-bundle",
            str(ca_bundle),
            "--crl-bundle",
            str(crl_bundle),
        )
    )
    log = tmp_path / "node.log"
    with log.open("wb") as output:
        process = subprocess.Popen([node, str(script)], stdout=output, stderr=output, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 15
        while f"listening on {port}" not in read_text(log):
            assert process.poll() is None, read_text(log)
            assert time.monotonic() < deadline, read_text(log)
            time.sleep(0.02)
        time.sleep(0.6)  # the poll's first look, so that the swap below is a change
        write_file(crl_bundle, b"".join(crl_pem(current_crl(ca=ca)) for ca in reversed(chain)))
        swapped_at = time.monotonic()
        while "CRL reloaded" not in read_text(log):
            assert process.poll() is None, read_text(log)
            assert time.monotonic() - swapped_at < 1.5, read_text(log)
            time.sleep(0.02)
        assert "not reloaded" not in read_text(log)
    finally:
        end_process(process, set())


@pytest.mark.parametrize(
    ("server", "reload"),
    [("nginx", "'systemctl reload nginx'"), ("apache", "'systemctl reload apache2'"), ("node", None)],
)
def test_the_systemd_service_syncs_every_crl_of_the_chain_for_its_server(
    server: str, reload: str | None, chain: list[CertificateAuthority]
) -> None:
    text = render("systemd", "--server", server, "--node", "web1")
    unit = text[text.index("[Unit]") :]
    exec_start = unit[unit.index("ExecStart=") :].split("\nRestart=", 1)[0].replace("\\\n", " ")
    for ca in chain:
        assert f"--url {ca.public_url('ca:crl-pem')}" in exec_start
    assert exec_start.startswith("ExecStart=/opt/enroll/bin/enroll-crl-sync ")
    for option in ("--every 2", "--node web1", "--token-file /etc/enroll/node.token"):
        assert option in exec_start
    if reload is None:
        assert "--reload-command" not in exec_start  # the generated node.js watches the file
    else:
        assert f"--reload-command {reload}" in exec_start
    for line in ("Type=simple", "Restart=always", "RestartSec=5", "ReadWritePaths=/etc/enroll",
                 "WantedBy=multi-user.target"):  # fmt: skip
        assert re.search(rf"^{line}$", unit, re.MULTILINE), line
    assert "[Timer]" not in text
    assert f"frontend_config systemd --server {server}" in text
    # The first run, before the server runs: no reload command, nothing to report.
    first = text[text.index("fetched without a reload command") : text.index("[Unit]")]
    assert "--url" in first
    assert "--reload-command" not in first
    assert "--every" not in first


def test_the_reload_command_can_be_overridden(chain: list[CertificateAuthority]) -> None:
    text = render("systemd", "--server", "node", "--reload-command", "kill -HUP 1234", "--every", "5")
    assert "--reload-command 'kill -HUP 1234'" in text
    assert "--every 5 " in text.replace("\\\n", " ")
    assert "--node %H " in text.replace("\\\n", " ")  # systemd's host name, unquoted


def test_every_must_be_at_least_a_second(chain: list[CertificateAuthority]) -> None:
    with pytest.raises(CommandError, match="at least 1"):
        render("systemd", "--every", "0")


@pytest.mark.real_client
@pytest.mark.parametrize("server", ["nginx", "apache", "node"])
def test_systemd_analyze_accepts_the_generated_service(
    server: str, chain: list[CertificateAuthority], tmp_path: Path
) -> None:
    analyze = need_program("systemd-analyze")  # Debian's systemd package (.ci/system-packages)
    text = render("systemd", "--server", server, "--sync-program", need_program("enroll-crl-sync"))
    unit = tmp_path / "enroll-crl-sync.service"
    unit.write_text(text)  # the whole output, comments and all, as the docs say to save it
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "enroll-crl-sync.service" not in result.stderr, result.stderr
