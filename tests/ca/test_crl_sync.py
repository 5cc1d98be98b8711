"""enroll-crl-sync against a small local HTTP server serving CRLs made by the PKI core."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca import crlsync
from ca.pki import crl as pki_crl
from ca.pki.keys import CAPrivateKey
from ca.pki.profiles import build_ca_certificate, build_ca_name

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@dataclass
class Served:
    """What the fake portal answers: path -> body; counts requests and remembers their headers.

    ``not_modified`` paths answer 304 to every request, asked or not.
    """

    bodies: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    not_modified: set[str] = field(default_factory=set)


@pytest.fixture
def portal() -> Iterator[tuple[str, Served]]:
    served = Served()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(dict(self.headers.items()))
            body = served.bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(body).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag or self.path in served.not_modified:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeCA:
    certificate: x509.Certificate
    key: CAPrivateKey

    def crl(
        self,
        *,
        number: int,
        this_update: dt.datetime = NOW - dt.timedelta(hours=1),
        lifetime: dt.timedelta = dt.timedelta(days=7),
        serials: tuple[int, ...] = (),
    ) -> bytes:
        entries = [pki_crl.CrlEntry(serial=s, revoked_at=this_update) for s in serials]
        return pki_crl.build_crl(
            issuer=self.certificate,
            issuer_key=self.key,
            number=number,
            this_update=this_update,
            next_update=this_update + lifetime,
            entries=entries,
        ).public_bytes(serialization.Encoding.DER)


def make_ca(name: str) -> FakeCA:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build_ca_certificate(
        subject=build_ca_name(common_name=name, organization=None),
        key=key,
        serial=1000,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=3650),
    )
    return FakeCA(certificate, key)


@pytest.fixture
def setup(tmp_path: Path, portal: tuple[str, Served]) -> tuple[FakeCA, str, Served, Path, Path]:
    ca = make_ca("Sync Root")
    base, served = portal
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    served.bodies["/root.crl"] = ca.crl(number=10)
    return ca, base + "/root.crl", served, ca_file, tmp_path / "crl.pem"


def installed_crls(path: Path) -> list[x509.CertificateRevocationList]:
    text = path.read_text()
    blocks = re.findall(r"-----BEGIN X509 CRL-----.*?-----END X509 CRL-----\n", text, re.DOTALL)
    assert "".join(blocks) == text
    return [x509.load_pem_x509_crl(block.encode()) for block in blocks]


def reload_marker(tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "reloads"
    command = f"{sys.executable} -c \"open('{marker}', 'a').write('x')\""
    return command, marker


def reloads(marker: Path) -> int:
    return len(marker.read_text()) if marker.exists() else 0


def test_it_installs_the_crl_and_runs_the_reload_command_once(
    setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path
) -> None:
    _ca, url, served, ca_file, output = setup
    command, marker = reload_marker(tmp_path)
    assert crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    installed = installed_crls(output)
    assert [crlsync.crl_number(c, url=url) for c in installed] == [10]
    assert reloads(marker) == 1
    # Nothing new: a conditional GET answered 304, no rewrite, no reload.
    assert not crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    assert served.requests[-1].get("If-None-Match")
    assert reloads(marker) == 1


def test_a_new_crl_replaces_the_old_one_and_reloads(
    setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path
) -> None:
    ca, url, served, ca_file, output = setup
    command, marker = reload_marker(tmp_path)
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    served.bodies["/root.crl"] = ca.crl(number=11, serials=(0x1234,))
    assert crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    (installed,) = installed_crls(output)
    assert installed.get_revoked_certificate_by_serial_number(0x1234) is not None
    assert reloads(marker) == 2


def test_it_writes_one_bundle_for_every_ca_of_the_chain(
    setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path
) -> None:
    ca, url, served, ca_file, output = setup
    issuing = make_ca("Sync Issuing")
    ca_file.write_bytes(ca_file.read_bytes() + issuing.certificate.public_bytes(serialization.Encoding.PEM))
    served.bodies["/issuing.crl"] = issuing.crl(number=3)
    crlsync.sync(urls=[url, url.replace("root", "issuing")], ca_file=ca_file, output=output, now=NOW)
    issuers = [c.issuer for c in installed_crls(output)]
    assert issuers == [ca.certificate.subject, issuing.certificate.subject]


def test_gets_ask_caches_to_revalidate_and_no_longer_name_the_node(
    setup: tuple[FakeCA, str, Served, Path, Path],
) -> None:
    _ca, url, served, ca_file, output = setup
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, now=NOW)
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, now=NOW)  # the conditional GET
    assert len(served.requests) == 2
    for headers in served.requests:
        assert headers["Cache-Control"] == "no-cache"
        assert "X-Enroll-Node" not in headers
    assert served.requests[-1]["If-None-Match"]


def _bad_crl(kind: str, ca: FakeCA) -> bytes:
    if kind == "expired":
        return ca.crl(number=20, this_update=NOW - dt.timedelta(days=8))
    if kind == "unverifiable":
        return make_ca("Sync Root").crl(number=20)  # same name, other key
    if kind == "truncated":
        return ca.crl(number=20)[:-40]
    if kind == "older":
        return ca.crl(number=5)
    if kind == "not a crl":
        return b"<html>502 Bad Gateway</html>"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("expired", "expired"),
        ("unverifiable", "not signed by a CA"),
        ("truncated", "not a complete CRL"),
        ("older", "lower than the installed"),
        ("not a crl", "not a complete CRL"),
    ],
)
def test_it_never_installs_a_bad_crl_and_does_not_reload(
    kind: str, words: str, setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path
) -> None:
    ca, url, served, ca_file, output = setup
    command, marker = reload_marker(tmp_path)
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    before = output.read_bytes()
    served.bodies["/root.crl"] = _bad_crl(kind, ca)
    with pytest.raises(crlsync.SyncError, match=words):
        crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    assert output.read_bytes() == before
    assert reloads(marker) == 1


def test_the_working_file_stays_when_the_portal_is_down(
    setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ca, url, served, ca_file, output = setup
    command, marker = reload_marker(tmp_path)
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=command, now=NOW)
    before = output.read_bytes()
    del served.bodies["/root.crl"]
    dead = "http://127.0.0.1:9/root.crl"  # discard port: connection refused
    for target in (url, dead):
        status = crlsync.main(
            [
                "--url",
                target,
                "--ca-file",
                str(ca_file),
                "--output",
                str(output),
                "--reload-command",
                command,
                "--timeout",
                "3",
            ]
        )
        assert status == 1
        message = capsys.readouterr().err
        assert message.count("\n") == 1
        assert "left unchanged" in message
    assert output.read_bytes() == before
    assert reloads(marker) == 1


def test_a_failing_reload_puts_the_previous_file_back(
    setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path
) -> None:
    ca, url, served, ca_file, output = setup
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, now=NOW)
    before = output.read_bytes()
    served.bodies["/root.crl"] = ca.crl(number=12)
    failing = f"{sys.executable} -c \"import sys; sys.exit('config test failed')\""
    with pytest.raises(crlsync.SyncError, match="reload command failed"):
        crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=failing, now=NOW)
    assert output.read_bytes() == before


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("/nonexistent/reload-nginx", "could not be started"),
        (f'{sys.executable} -c "import time; time.sleep(30)"', "did not finish"),
        ("'unbalanced", "could not be started"),
    ],
)
def test_a_reload_that_cannot_run_puts_the_previous_file_back_and_is_retried(
    command: str, words: str, setup: tuple[FakeCA, str, Served, Path, Path], tmp_path: Path
) -> None:
    ca, url, served, ca_file, output = setup
    crlsync.sync(urls=[url], ca_file=ca_file, output=output, now=NOW)
    before = output.read_bytes()
    served.bodies["/root.crl"] = ca.crl(number=13)
    with pytest.raises(crlsync.SyncError, match=words):
        crlsync.sync(
            urls=[url], ca_file=ca_file, output=output, reload_command=command, reload_timeout=1, now=NOW
        )
    assert output.read_bytes() == before
    good, marker = reload_marker(tmp_path)
    assert crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=good, now=NOW)
    assert reloads(marker) == 1


@pytest.mark.parametrize(
    "url", ["not-a-url", "ftp://127.0.0.1/root.crl", "http://127.0.0.1:portless/root.crl"]
)
def test_a_url_it_cannot_fetch_is_one_line_not_a_traceback(
    url: str, setup: tuple[FakeCA, str, Served, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _ca, _url, _served, ca_file, output = setup

    status = crlsync.main(["--url", url, "--ca-file", str(ca_file), "--output", str(output)])

    assert status == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert url in message
    assert not output.exists()


def test_a_304_it_did_not_ask_for_is_a_sync_error(setup: tuple[FakeCA, str, Served, Path, Path]) -> None:
    _ca, url, served, ca_file, output = setup
    served.not_modified.add("/root.crl")

    with pytest.raises(crlsync.SyncError, match="HTTP 304"):
        crlsync.sync(urls=[url], ca_file=ca_file, output=output, now=NOW)
    assert served.requests[-1].get("If-None-Match") is None


def test_an_output_it_cannot_write_is_a_sync_error(setup: tuple[FakeCA, str, Served, Path, Path]) -> None:
    _ca, url, _served, ca_file, output = setup
    missing = output.parent / "no-such-folder" / output.name

    with pytest.raises(crlsync.SyncError, match="cannot write"):
        crlsync.sync(urls=[url], ca_file=ca_file, output=missing, now=NOW)
