"""Real clients and servers for tests: a private nginx with client-certificate checks, Debian's Chromium
driven by Playwright, throwaway server certificates, free ports and the screenshot folder.

Not a test module. Fixtures defined here are imported by the test modules that use them, e.g.
``from tests.realclients import chromium, nginx_factory  # noqa: F401``.

How the programs behave on these machines is written down in /work/shared/REAL-CLIENTS.md (nginx reads
its CRL only at start or reload, needs one PEM CRL per CA in the chain, refuses a revoked client with
HTTP 400; Playwright must use Debian's ``chromium``, never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import need_program

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Playwright

P = ParamSpec("P")
T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent

#: Flags for Debian's Chromium as root in a container (REAL-CLIENTS.md).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

#: Upper bound for every wait on a started program (start, reload, stop).
WAIT_SECONDS = 15.0


# --- small things --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def screenshot_dir() -> Path:
    """The folder for screenshots: ``$ENROLL_ARTIFACTS_DIR`` or ``<repo>/test-artifacts/screenshots``."""
    configured = os.environ.get("ENROLL_ARTIFACTS_DIR", "")
    folder = Path(configured) if configured else REPO / "test-artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_file(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` atomically: a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
    return path


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` (Linux /proc); nginx's workers when ``pid`` is its master."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- a throwaway server certificate -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """Files of a throwaway server CA and a server certificate for 127.0.0.1 (IP SAN) it signed."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def make_server_certificate(folder: Path, *, host: str = "127.0.0.1") -> ServerCertificate:
    """Make a server CA and a TLS server certificate for ``host`` (an IP address) under ``folder``.

    Only for the server side of a test: clients either trust ``ca_path`` or ignore HTTPS errors.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway test server CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServerCertificate(
        ca_path=write_file(folder / "server-ca.pem", ca_cert.public_bytes(pem)),
        cert_path=write_file(folder / "server.pem", cert.public_bytes(pem)),
        key_path=write_file(
            folder / "server.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            mode=0o600,
        ),
    )


# --- nginx -----------------------------------------------------------------------------------------------


def nginx_program() -> str:
    """Debian's nginx: on PATH, or in /usr/sbin (not on a normal user's PATH); else skip (or fail in CI)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin") or need_program("nginx")


class NginxError(RuntimeError):
    """nginx did not start, refused a configuration (``nginx -t``) or did not reload in time."""


_NGINX_CONF = """\
# Private test instance: everything under {dir}; started with nginx -p {dir} -c {dir}/nginx.conf
daemon off;
master_process on;
worker_processes 1;
# After a reload the old worker waits for its open connections; Chromium keeps speculative (preconnected)
# sockets open that never send a request. Close them after 1 s so old workers, and their CRL, go quickly.
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
    # No reuse of connections or TLS sessions: every request is a fresh handshake checked against the
    # CRL the current workers loaded.
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
        # Leaf, issuing CA, root: depth 2 is what a root + intermediate chain needs (nginx's default is 1).
        ssl_verify_depth {verify_depth};

        default_type text/plain;
        location / {{
            return 200 "verify=$ssl_client_verify serial=$ssl_client_serial dn=$ssl_client_s_dn\\n";
        }}
    }}
}}
"""


class NginxServer:
    """A private nginx on 127.0.0.1:<free port> that requires a client certificate checked against a CA
    bundle and a CRL bundle (PEM, one CRL per CA in the chain).

    Use as a context manager (or through the :func:`nginx_factory` fixture)::

        with NginxServer(tmp_path / "nginx", ca_bundle=..., crl_bundle=...) as server:
            ...  # server.origin, server.url, server.update_crl(new_crl_bundle), server.error_log()

    The page at ``/`` answers ``verify=$ssl_client_verify serial=$ssl_client_serial dn=$ssl_client_s_dn``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        ca_bundle: bytes,
        crl_bundle: bytes,
        port: int | None = None,
        verify_depth: int = 2,
    ) -> None:
        self.directory = directory.resolve()
        self.ca_bundle = ca_bundle
        self.crl_bundle = crl_bundle
        self.port = port or free_port()
        self.verify_depth = verify_depth
        self.program = ""
        self.process: subprocess.Popen[bytes] | None = None

    # -- paths and addresses

    @property
    def conf_path(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def crl_path(self) -> Path:
        return self.directory / "client-crl.pem"

    @property
    def ca_path(self) -> Path:
        return self.directory / "client-ca.pem"

    @property
    def error_log_path(self) -> Path:
        return self.directory / "error.log"

    @property
    def origin(self) -> str:
        """The origin Playwright's ``client_certificates`` must name exactly."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + "/"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def error_log(self) -> str:
        """The error log so far (``info`` level: the reason nginx refused a client certificate is here)."""
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _stderr(self) -> str:
        try:
            return (self.directory / "stderr.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _argv(self, *args: str) -> list[str]:
        prefix, conf, log = f"{self.directory}/", str(self.conf_path), str(self.error_log_path)
        return [self.program, "-p", prefix, "-c", conf, "-e", log, *args]

    def _nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(*args),
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )

    def workers(self) -> set[int]:
        """PIDs of the running worker processes."""
        if self.process is None or self.process.poll() is not None:
            return set()
        return _children(self.process.pid)

    # -- life cycle

    def start(self) -> Self:
        """Write the configuration, check it with ``nginx -t``, start nginx and wait until it accepts."""
        if self.process is not None:
            raise NginxError("this nginx was started already")
        self.program = nginx_program()
        for sub in ("tmp", "server"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        server = make_server_certificate(self.directory / "server")
        write_file(self.ca_path, self.ca_bundle)
        write_file(self.crl_path, self.crl_bundle)
        self.conf_path.write_text(
            _NGINX_CONF.format(
                dir=self.directory,
                port=self.port,
                server_cert=server.cert_path,
                server_key=server.key_path,
                verify_depth=self.verify_depth,
            )
        )
        checked = self._nginx("-t")
        if checked.returncode != 0:
            raise NginxError(f"nginx -t refused the configuration:\n{checked.stderr}")
        with (self.directory / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        try:
            self._wait_until(
                lambda: _port_open(self.port) and bool(self.workers()), "nginx to accept connections"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise NginxError(
                    f"nginx exited with status {self.process.returncode} while waiting for {what}:\n"
                    f"{self._stderr()}\n{self.error_log()[-4000:]}"
                )
            if condition():
                return
            if time.monotonic() > deadline:
                raise NginxError(
                    f"timed out after {WAIT_SECONDS:.0f} s waiting for {what}:\n{self.error_log()[-4000:]}"
                )
            time.sleep(0.02)

    def update_crl(self, pem: bytes) -> None:
        """Swap in a new CRL bundle and reload, as a front server's sync job does.

        The file is replaced atomically and checked with ``nginx -t``; if nginx refuses it the previous
        file is put back, nothing is reloaded (the old CRL keeps serving) and :class:`NginxError` is
        raised. Otherwise nginx reloads and this waits until every old worker has exited, so the next
        connection is served by a worker that loaded the new CRL.
        """
        if self.process is None or self.process.poll() is not None:
            raise NginxError("nginx is not running")
        previous = self.crl_path.read_bytes()
        write_file(self.crl_path, pem)
        checked = self._nginx("-t")
        if checked.returncode != 0:
            write_file(self.crl_path, previous)
            raise NginxError(
                f"nginx -t refused the new CRL; not reloaded, the old CRL stays:\n{checked.stderr}"
            )
        old_workers = self.workers()
        reloaded = self._nginx("-s", "reload")
        if reloaded.returncode != 0:
            raise NginxError(f"nginx -s reload failed:\n{reloaded.stderr}")
        self._wait_until(
            lambda: bool(self.workers()) and not (self.workers() & old_workers),
            "the old nginx workers to exit after the reload",
        )
        self.crl_bundle = pem

    def stop(self) -> None:
        """Stop nginx (``nginx -s stop``, then by PID if it does not exit in time). Safe to call twice."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        workers = _children(process.pid)
        try:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self._nginx("-s", "stop")
            try:
                process.wait(timeout=WAIT_SECONDS / 3)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=WAIT_SECONDS / 3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=WAIT_SECONDS / 3)
        finally:
            # Workers whose master died hard would keep the port; end exactly those PIDs.
            for pid in workers:
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


NginxFactory = Callable[..., NginxServer]


@pytest.fixture
def nginx_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFactory]:
    """Start private nginx servers: ``nginx_factory(ca_bundle=..., crl_bundle=...)``; all stopped at the end.

    Each gets its own directory (configuration, certificates, CRL, logs, pid, temp paths). nginx's master
    reads the certificates and CRLs, so the unprivileged workers need no access to pytest's 0700 tree.
    """
    started: list[NginxServer] = []

    def start(**kwargs: Any) -> NginxServer:
        directory = tmp_path_factory.mktemp("nginx")
        server = NginxServer(directory, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# --- Chromium through Playwright --------------------------------------------------------------------------


def launch_chromium(playwright: Playwright, **kwargs: Any) -> Browser:
    """Debian's Chromium, headless, with the flags it needs here (never Playwright's own download).

    Call ``need_program("chromium")`` in the test's thread first if this runs in another thread (a skip
    raised there still reaches the test, but reads less clearly).
    """
    kwargs.setdefault("executable_path", need_program("chromium"))
    kwargs.setdefault("headless", True)
    return playwright.chromium.launch(args=list(CHROMIUM_ARGS), **kwargs)


def client_certificate(
    origin: str,
    *,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    pfx_path: Path | None = None,
    passphrase: str | None = None,
) -> dict[str, str]:
    """One entry of Playwright's ``client_certificates``: PEM certificate + key files, or a PKCS#12 file."""
    entry = {"origin": origin}
    if pfx_path is not None:
        entry["pfxPath"] = str(pfx_path)
        if passphrase is not None:
            entry["passphrase"] = passphrase
    elif cert_path is not None and key_path is not None:
        entry["certPath"] = str(cert_path)
        entry["keyPath"] = str(key_path)
        if passphrase is not None:
            entry["passphrase"] = passphrase
    else:
        raise ValueError("give cert_path and key_path, or pfx_path")
    return entry


def new_context(
    browser: Browser, *, certificates: Sequence[dict[str, str]] = (), **kwargs: Any
) -> BrowserContext:
    """A fresh browser context (no shared connections or TLS sessions) presenting ``certificates``.

    ``ignore_https_errors`` is on: test servers use a throwaway server CA. Playwright makes the TLS
    connection itself for an origin with a client certificate, so each entry's origin must match exactly.
    """
    kwargs.setdefault("ignore_https_errors", True)
    if certificates:
        kwargs["client_certificates"] = list(certificates)
    return browser.new_context(**kwargs)


class ChromiumThread:
    """Debian's Chromium, driven through Playwright's sync API in a thread of its own.

    Why a thread: between two calls, Playwright's sync API leaves its asyncio loop marked as running in
    the calling thread. Django then refuses ORM calls there (SynchronousOnlyOperation), and with
    DJANGO_ALLOW_ASYNC_UNSAFE it silently opens *another* database connection (asgiref keys connections
    by context while a loop runs): it cannot see the test's transaction, and SQLite answers "database
    table is locked". Keeping Playwright in this thread leaves the test's thread free for the ORM.

    Every Playwright object belongs to this thread: pass a function that gets the browser::

        def visit(browser: Browser, url: str) -> int: ...
        status = chromium.call(visit, server.url)
    """

    def __init__(self, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def start(self) -> Self:
        executable = need_program("chromium")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        try:
            self._executor.submit(self._start, executable).result(timeout=self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = launch_chromium(self._playwright, executable_path=executable)

    def call(self, function: Callable[Concatenate[Browser, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``function(browser, *args, **kwargs)`` in the Playwright thread and return its result."""
        if self._executor is None or self._browser is None:
            raise RuntimeError("Chromium is not running")
        return self._executor.submit(function, self._browser, *args, **kwargs).result(timeout=self.timeout)

    def _stop(self) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._browser = None
            if self._playwright is not None:
                self._playwright.stop()
            self._playwright = None

    def stop(self) -> None:
        """Close the browser and Playwright's driver. Safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            executor.submit(self._stop).result(timeout=self.timeout)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)  # a hung call must not hang the teardown
            raise
        executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture
def chromium() -> Iterator[ChromiumThread]:
    """Headless Debian Chromium for one test (in its own thread: see :class:`ChromiumThread`)."""
    with ChromiumThread() as running:
        yield running
