"""enroll-crl-sync against a small local HTTP server serving CRLs made by the PKI core."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ca import crlsync
from ca.pki import crl as pki_crl
from ca.pki import node_reports
from ca.pki.keys import CAPrivateKey
from ca.pki.profiles import build_ca_certificate, build_ca_name
from ca.pki.signing import PrivateKeyBackend

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    """What the fake portal answers: path -> body; counts requests and remembers their headers.

    ``not_modified`` paths answer 304 to every request, asked or not.
    """

    bodies: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    not_modified: set[str] = field(default_factory=set)
    # POST .../report: checked as the portal checks it (parse_report, check_signature with ``node_key``).
    node_key: bytes | None = None
    refuse: tuple[int, str] | None = None  # answer every report with this status and plain-text reason
    reports: list[node_reports.Report] = field(default_factory=list)
    report_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # reports the fake portal found wrong


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

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if served.refuse is not None:
                self._answer(*served.refuse)
                return
            if not self.path.endswith("/report"):
                self.send_error(404)
                return
            try:
                report = node_reports.parse_report(body)
                if served.node_key is None:
                    raise node_reports.ReportError(node_reports.ReportProblem.BAD_TOKEN, "unknown node")
                node_reports.check_signature(
                    body=body,
                    signature=self.headers.get(node_reports.SIGNATURE_HEADER, ""),
                    public_key=served.node_key,
                )
            except node_reports.ReportError as exc:
                served.refusals.append(str(exc))
                self._answer(403, str(exc))
                return
            served.reports.append(report)
            served.report_requests.append((self.path, dict(self.headers.items())))
            self._answer(200, "accepted")

        def _answer(self, status: int, text: str) -> None:
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
            backend=PrivateKeyBackend(key=self.key),
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


def test_a_missing_output_folder_is_said_plainly(setup: tuple[FakeCA, str, Served, Path, Path]) -> None:
    _ca, url, _served, ca_file, output = setup
    missing = output.parent / "no-such-folder" / output.name

    with pytest.raises(crlsync.SyncError, match=r"the folder .*no-such-folder does not exist"):
        crlsync.sync(urls=[url], ca_file=ca_file, output=missing, now=NOW)


# --- signed install reports --------------------------------------------------------------------------


def _real_now() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


@dataclass
class Node:
    """A front server registered on the fake portal: its name, token file and the CRL URL it syncs."""

    ca: FakeCA
    served: Served
    base: str
    url: str
    ca_file: Path
    output: Path
    token_file: Path
    key: Ed25519PrivateKey

    def serve(self, number: int) -> None:
        """Serve a CRL valid now (``main`` checks freshness against the real clock)."""
        self.served.bodies["/pki/example-root-ca.crl.pem"] = self.ca.crl(
            number=number, this_update=_real_now() - dt.timedelta(hours=1)
        )

    def argv(self, *extra: str) -> list[str]:
        return [
            "--url",
            self.url,
            "--ca-file",
            str(self.ca_file),
            "--output",
            str(self.output),
            "--node",
            "web1",
            "--token-file",
            str(self.token_file),
            "--timeout",
            "5",
            *extra,
        ]

    def reporter(self, *, interval: float, heartbeat: float) -> crlsync.Reporter:
        return crlsync.Reporter("web1", self.key, self.base + "/pki/report", interval, heartbeat, 5.0)

    def config(self, *, reload_command: str | None = None) -> crlsync.SyncConfig:
        return crlsync.SyncConfig((self.url,), self.ca_file, self.output, reload_command, 5.0, 5.0)


@pytest.fixture
def node(tmp_path: Path, portal: tuple[str, Served]) -> Node:
    base, served = portal
    ca = make_ca("Example Root CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    key = node_reports.new_node_key()
    served.node_key = node_reports.public_key_bytes(key)
    token_file = tmp_path / "web1.token"
    token_file.write_text(node_reports.token_for(key) + "\n")
    result = Node(
        ca,
        served,
        base,
        base + "/pki/example-root-ca.crl.pem",
        ca_file,
        tmp_path / "crl.pem",
        token_file,
        key,
    )
    result.serve(10)
    return result


def key_id(ca: FakeCA) -> str:
    return ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def test_the_default_report_url_is_beside_the_first_crl_url() -> None:
    assert (
        crlsync.default_report_url("http://pki.example.com/pki/example-root-ca.crl.pem?x=1")
        == "http://pki.example.com/pki/report"
    )


def test_a_report_after_an_install_names_the_installed_crl_and_verifies_with_the_node_key(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    before = int(time.time())

    assert crlsync.main(node.argv()) == 0

    assert f"updated {node.output}" in capsys.readouterr().out
    assert node.served.refusals == []
    (report,) = node.served.reports
    assert report.node == "web1"
    assert report.outcome is node_reports.ReportOutcome.INSTALLED
    assert report.error == ""
    assert report.crls == (node_reports.InstalledCrl(key_id(node.ca), 10),)
    assert before <= report.timestamp <= time.time() + 1
    assert (report.interval, report.heartbeat) == (60, 60)  # one run: its own heartbeat
    path, headers = node.served.report_requests[0]
    assert path == "/pki/report"
    assert headers["Content-Type"] == node_reports.CONTENT_TYPE
    assert headers["User-Agent"] == crlsync.USER_AGENT
    assert all("X-Enroll-Node" not in h for h in node.served.requests)


def test_a_one_shot_run_always_reports_even_when_nothing_changed(node: Node) -> None:
    assert crlsync.main(node.argv()) == 0
    assert crlsync.main(node.argv("--heartbeat", "300")) == 0

    first, second = node.served.reports
    assert second.outcome is node_reports.ReportOutcome.UNCHANGED
    assert second.crls == first.crls
    assert (second.interval, second.heartbeat) == (300, 300)
    assert second.nonce != first.nonce
    state = (node.output.parent / "crl.pem.state.json").read_text()
    assert key_id(node.ca) in state


def test_a_failed_reload_reports_failed_with_the_numbers_the_server_still_runs(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crlsync.main(node.argv()) == 0
    before = node.output.read_bytes()
    node.serve(12)
    failing = f"{sys.executable} -c \"import sys; sys.exit('config test failed')\""

    assert crlsync.main(node.argv("--reload-command", failing)) == 1

    assert node.output.read_bytes() == before
    assert "put back" in capsys.readouterr().err
    report = node.served.reports[-1]
    assert report.outcome is node_reports.ReportOutcome.FAILED
    assert "reload command failed" in report.error
    assert "put back" in report.error
    assert report.crls == (node_reports.InstalledCrl(key_id(node.ca), 10),)


def test_a_failed_fetch_reports_failed_with_what_stays_installed(node: Node) -> None:
    assert crlsync.main(node.argv()) == 0
    del node.served.bodies["/pki/example-root-ca.crl.pem"]

    assert crlsync.main(node.argv()) == 1

    report = node.served.reports[-1]
    assert report.outcome is node_reports.ReportOutcome.FAILED
    assert "HTTP 404" in report.error
    assert report.crls == (node_reports.InstalledCrl(key_id(node.ca), 10),)


def test_a_refused_report_warns_and_leaves_the_exit_status_zero(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    node.served.refuse = (403, "unknown front server web1 (register it: manage.py frontserver add)")

    assert crlsync.main(node.argv()) == 0

    assert [c.issuer for c in installed_crls(node.output)] == [node.ca.certificate.subject]
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "warning" in err
    assert "HTTP 403" in err
    assert "unknown front server web1" in err
    assert "exit status" in err


def test_an_unreachable_report_url_warns_and_leaves_the_exit_status_zero(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    status = crlsync.main(node.argv("--report-url", "http://127.0.0.1:9/pki/report"))

    assert status == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot reach http://127.0.0.1:9/pki/report" in err
    assert node.output.exists()


def test_node_without_a_token_file_is_a_usage_error(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--url", node.url, "--ca-file", str(node.ca_file), "--output", str(node.output), "--node", "web1"]

    with pytest.raises(SystemExit) as exit_info:
        crlsync.main(argv)

    assert exit_info.value.code == 2
    assert "--node needs --token-file" in capsys.readouterr().err
    assert node.served.requests == []


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read the token file"),
        ("not base64 at all!", "does not hold base64 text"),
        ("c2hvcnQ=", "does not hold a node key"),
    ],
)
def test_a_bad_token_file_exits_2_before_fetching(
    content: str | None, words: str, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    if content is None:
        node.token_file.unlink()
    else:
        node.token_file.write_text(content)

    assert crlsync.main(node.argv()) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert words in err
    assert str(node.token_file) in err
    assert node.served.requests == []
    assert not node.output.exists()


def test_a_first_run_whose_reload_fails_keeps_the_new_file_and_says_so(
    node: Node, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    failing = f"{sys.executable} -c \"import sys; sys.exit('nginx is not running')\""

    assert crlsync.main(node.argv("--reload-command", failing)) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        f"{node.output} was installed (there was no previous file) and is read when the server starts" in err
    )
    assert "put back" not in err
    assert "left unchanged" not in err
    assert [c.issuer for c in installed_crls(node.output)] == [node.ca.certificate.subject]
    report = node.served.reports[-1]
    assert report.outcome is node_reports.ReportOutcome.FAILED
    assert "there was no previous file" in report.error
    assert report.crls == (node_reports.InstalledCrl(key_id(node.ca), 10),)
    # The state was kept: once the server runs, the next run finds the bundle current (no reload needed).
    command, marker = reload_marker(tmp_path)
    assert crlsync.main(node.argv("--reload-command", command)) == 0
    assert reloads(marker) == 0
    assert node.served.reports[-1].outcome is node_reports.ReportOutcome.UNCHANGED


def test_a_first_run_whose_reload_fails_without_a_portal_report_keeps_the_file_too(
    setup: tuple[FakeCA, str, Served, Path, Path],
) -> None:
    _ca, url, _served, ca_file, output = setup
    failing = f'{sys.executable} -c "import sys; sys.exit(3)"'

    with pytest.raises(crlsync.SyncError, match="there was no previous file"):
        crlsync.sync(urls=[url], ca_file=ca_file, output=output, reload_command=failing, now=NOW)

    assert [crlsync.crl_number(c, url=url) for c in installed_crls(output)] == [10]


# --- service mode ------------------------------------------------------------------------------------


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 1.0


@dataclass
class FakeTime:
    """An injected wait for run_service: records each wait, advances a fake clock, runs hooks, stops."""

    stop: threading.Event
    limit: int
    now: float = 0.0
    waits: list[float] = field(default_factory=list)
    hooks: dict[int, Callable[[], None]] = field(default_factory=dict)  # after the n-th wait (1-based)
    count: Callable[[], int] | None = None  # e.g. the reports so far, noted at each wait (after each run)
    counted: list[tuple[float, int]] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        if self.count is not None:
            self.counted.append((self.now, self.count()))
        self.waits.append(seconds)
        self.now += seconds
        hook = self.hooks.get(len(self.waits))
        if hook is not None:
            hook()
        if len(self.waits) >= self.limit:
            self.stop.set()
        return self.stop.is_set()


def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_service_picks_up_a_new_crl_within_a_couple_of_intervals(node: Node) -> None:
    stop = threading.Event()
    every = 0.05
    thread = threading.Thread(
        target=crlsync.run_service,
        args=(node.config(),),
        kwargs={
            "every": every,
            "stop": stop,
            "reporter": node.reporter(interval=every, heartbeat=10 * every),
        },
        daemon=True,
    )
    thread.start()
    try:
        wait_until(lambda: bool(node.served.reports))
        assert node.served.reports[0].outcome is node_reports.ReportOutcome.INSTALLED
        node.serve(11)
        fetches_before = len(node.served.requests)
        changed = time.monotonic()
        wait_until(lambda: any(r.crls[0].number == 11 for r in node.served.reports))
        # The change was fetched by the next run (at most one run was already under way).
        assert len(node.served.requests) - fetches_before <= 2
        assert time.monotonic() - changed < 2.0
    finally:
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()
    assert node.served.refusals == []
    installed = [r for r in node.served.reports if r.outcome is node_reports.ReportOutcome.INSTALLED]
    assert [r.crls[0].number for r in installed] == [10, 11]
    assert all(r.interval == every and r.heartbeat == 10 * every for r in node.served.reports)
    assert all(h["Cache-Control"] == "no-cache" for h in node.served.requests)
    assert all(h.get("If-None-Match") for h in node.served.requests[1:])


def test_the_service_sends_heartbeats_when_nothing_changes_and_prints_nothing_per_poll(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    fake = FakeTime(stop, limit=12, count=lambda: len(node.served.reports))

    crlsync.run_service(
        node.config(),
        every=1.0,
        stop=stop,
        reporter=node.reporter(interval=1.0, heartbeat=5.0),
        wait=fake.wait,
        rng=NoJitter(),
        clock=fake.clock,
    )

    assert len(node.served.requests) == 12  # a run before each of the 12 waits
    outcomes = [r.outcome for r in node.served.reports]
    assert outcomes[0] is node_reports.ReportOutcome.INSTALLED
    assert outcomes[1:] == [node_reports.ReportOutcome.UNCHANGED] * (len(outcomes) - 1)
    assert 3 <= len(outcomes) < 12  # heartbeats, not a report per run
    # Runs at 0, 1, 2, ... 11 s: the silence between reports never exceeds the heartbeat (5 s).
    report_times = [
        t for (t, n), (_, m) in zip(fake.counted, [(0.0, 0), *fake.counted[:-1]], strict=True) if n > m
    ]
    assert report_times[0] == 0
    assert len(report_times) == len(outcomes)
    gaps = [b - a for a, b in zip(report_times, [*report_times[1:], fake.now], strict=True)]
    assert max(gaps) <= 5.0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert f"updated {node.output}" in out


def test_the_service_backs_off_on_errors_reports_each_failure_and_resets_on_success(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    body = node.served.bodies.pop("/pki/example-root-ca.crl.pem")  # the portal answers 404
    fake = FakeTime(stop, limit=10)
    fake.hooks[8] = lambda: node.served.bodies.__setitem__("/pki/example-root-ca.crl.pem", body)

    crlsync.run_service(
        node.config(),
        every=1.0,
        stop=stop,
        reporter=node.reporter(interval=1.0, heartbeat=100.0),
        wait=fake.wait,
        rng=NoJitter(),
        clock=fake.clock,
    )

    # Doubling after each consecutive failure, capped at max(60 s, 10 x 1 s); back to 1 s after a success.
    assert fake.waits == [2, 4, 8, 16, 32, 60, 60, 60, 1, 1]
    outcomes = [r.outcome for r in node.served.reports]
    assert outcomes == [node_reports.ReportOutcome.FAILED] * 8 + [node_reports.ReportOutcome.INSTALLED]
    assert all("HTTP 404" in r.error for r in node.served.reports[:8])
    err = capsys.readouterr().err
    assert err.count("\n") == 8  # one line per failure


def test_the_back_off_cap_grows_with_long_intervals() -> None:
    assert crlsync.backoff_cap(0.05) == 60
    assert crlsync.backoff_cap(30) == 300


def test_the_wait_between_runs_has_jitter_of_ten_percent(node: Node) -> None:
    stop = threading.Event()
    fake = FakeTime(stop, limit=40)

    crlsync.run_service(node.config(), every=10.0, stop=stop, wait=fake.wait, rng=random.Random(5))

    assert all(9.0 <= w <= 11.0 for w in fake.waits)
    assert len(set(fake.waits)) > 30


def test_the_service_stops_promptly_when_the_stop_event_is_set(node: Node) -> None:
    stop = threading.Event()
    thread = threading.Thread(
        target=crlsync.run_service,
        args=(node.config(),),
        kwargs={"every": 60.0, "stop": stop, "reporter": node.reporter(interval=60, heartbeat=600)},
        daemon=True,
    )
    thread.start()
    wait_until(lambda: bool(node.served.reports))
    started = time.monotonic()
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert len(node.served.requests) == 1


def test_heartbeat_shorter_than_every_is_a_usage_error(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        crlsync.main(node.argv("--every", "60", "--heartbeat", "30"))
    assert exit_info.value.code == 2
    assert "--heartbeat must not be shorter than --every" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_service_process_exits_0_soon_after_sigterm_or_sigint(node: Node, signum: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [sys.executable, "-m", "ca.crlsync", *node.argv("--every", "0.2")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        wait_until(lambda: len(node.served.requests) >= 2 or process.poll() is not None, timeout=20)
        assert process.poll() is None, process.communicate()
        process.send_signal(signum)
        out, err = process.communicate(timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert err == ""
    assert out.splitlines()[-1] == "enroll-crl-sync: stopped"
    assert f"updated {node.output}" in out
    assert node.served.reports[0].outcome is node_reports.ReportOutcome.INSTALLED
    assert [c.issuer for c in installed_crls(node.output)] == [node.ca.certificate.subject]
