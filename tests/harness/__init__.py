"""Real clients and servers for tests: private nginx, Apache and node HTTPS servers with client-certificate
checks, Debian's Chromium driven by Playwright, a plain TLS client (:func:`https_get`), throwaway server
certificates, free ports, the screenshot folder, and the portal's side (issued client certificates, CA and
CRL bundles, a real ``enroll-crl-sync`` run).

Not a test module. Fixtures defined here are imported by the test modules that use them, e.g.
``from tests.harness import chromium, nginx_factory  # noqa: F401``.

How the programs behave on these machines is written down in docs/FRONT-SERVERS.md (nginx reads
its CRL only at start or reload, needs one PEM CRL per CA in the chain, refuses a revoked client with
HTTP 400; Apache needs a graceful restart and answers a revoked client with a TLS alert; node swaps a CRL
in with ``setSecureContext``; Playwright must use Debian's ``chromium``, never ``playwright install``).

The three servers share :class:`FrontServer` (paths, origin/url/pid, start/stop/wait). Every server
takes a reload mark before something else reloads it (``enroll-crl-sync --reload-command
server.reload_command``) and waits for it: ``mark = server.reload_mark(); ...; server.wait_reloaded(mark)``.

The portal's side as fixtures: ``chain`` (the root alone, or root + issuing CA with
``@pytest.mark.parametrize("chain_kind", ["root", "intermediate"])``), ``chain_ca_file``, ``alice_client``
and ``bob_client`` (issued by the chain's last CA). In the browser: :func:`visit` for one request,
:class:`BrowserSession` for steps that keep a login, :func:`shoot` for screenshots at two widths.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, Generic, ParamSpec, Self, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.models import RevocationReason
from ca.pki import profiles
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.export import ca_certificate_pem, crl_pem, export_certificate
from ca.services.revocation import revoke_certificate
from enroll import flows
from tests.conftest import make_csr, need_program

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, ViewportSize

    from ca.models import Certificate, CertificateAuthority

P = ParamSpec("P")
T = TypeVar("T")
#: What a server's reload mark is (see :class:`FrontServer`).
M = TypeVar("M")
S = TypeVar("S", bound="FrontServer[Any]")

REPO = Path(__file__).resolve().parents[2]

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


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (the form the test servers and clients read)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_server_certificate(folder: Path, *, host: str = "127.0.0.1") -> ServerCertificate:
    """Make a server CA and a TLS server certificate for ``host`` (an IP address) under ``folder``.

    Only for the server side of a test: clients either trust ``ca_path`` or ignore HTTPS errors. The CA
    is a root from the portal's own PKI core (:func:`ca.pki.profiles.build_ca_certificate`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    backdated = now - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = profiles.build_ca_name(common_name="Throwaway test server CA", organization=None)
    ca_cert = profiles.build_ca_certificate(
        subject=ca_name,
        key=ca_key,
        serial=x509.random_serial_number(),
        not_before=backdated,
        not_after=now + dt.timedelta(days=2),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(backdated)
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
        key_path=write_file(folder / "server.key", _key_pem(key), mode=0o600),
    )


# --- a plain HTTPS client (Python's ssl module) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpsAnswer:
    """What a TLS client got: an HTTP status and body, or (``status`` None) the TLS/connection error."""

    status: int | None
    text: str

    @property
    def refused_in_tls(self) -> bool:
        """The server ended the connection during or right after the handshake (no HTTP answer)."""
        return self.status is None


def https_get(
    url: str,
    *,
    server_ca: Path,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    timeout: float = 10.0,
) -> HttpsAnswer:
    """GET ``url`` on a fresh connection (no session reuse), presenting ``cert_path``/``key_path`` if given.

    The server's certificate is verified against ``server_ca`` (a failure there raises: it is the test's
    mistake, not a refusal). A server that refuses the client certificate either answers over HTTP (nginx:
    400) or ends the connection: with TLS 1.3 the client's handshake is complete before the server has
    checked the certificate, so the refusal shows up as an alert or a reset on the first read. Both are
    returned as ``HttpsAnswer(None, reason)``.
    """
    context = ssl.create_default_context(cafile=str(server_ca))
    if cert_path is not None:
        context.load_cert_chain(str(cert_path), str(key_path) if key_path is not None else None)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url}")
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/", headers={"Connection": "close"})
        response = connection.getresponse()
        return HttpsAnswer(response.status, response.read().decode("utf-8", errors="replace"))
    except ssl.SSLCertVerificationError:
        raise
    except ssl.SSLError as exc:
        return HttpsAnswer(None, f"{type(exc).__name__}: {exc.reason or exc}")
    except ConnectionError as exc:  # reset, aborted, broken pipe, http.client.RemoteDisconnected
        return HttpsAnswer(None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


# --- shared by the servers below ---------------------------------------------------------------------------


def _wait_for(
    condition: Callable[[], bool],
    what: str,
    *,
    process: subprocess.Popen[bytes] | None,
    name: str,
    logs: Callable[[], str],
    error: type[RuntimeError],
) -> None:
    """Poll ``condition`` until true; raise ``error`` with the logs if ``process`` exits or time runs out."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        if process is not None and process.poll() is not None:
            raise error(
                f"{name} exited with status {process.returncode} while waiting for {what}:\n{logs()[-4000:]}"
            )
        if condition():
            return
        if time.monotonic() > deadline:
            raise error(f"timed out after {WAIT_SECONDS:.0f} s waiting for {what}:\n{logs()[-4000:]}")
        time.sleep(0.02)


def _end_process(process: subprocess.Popen[bytes] | None, children: set[int]) -> None:
    """SIGTERM ``process`` (then SIGKILL), and SIGKILL exactly those ``children`` that outlived it."""
    try:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=WAIT_SECONDS / 3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=WAIT_SECONDS / 3)
    finally:
        for pid in children:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _kill_command(sig: signal.Signals, pid: int) -> str:
    """``kill -SIG PID`` as a command line for ``enroll-crl-sync --reload-command`` (split, no shell)."""
    return shlex.join([need_program("kill"), f"-{sig.name.removeprefix('SIG')}", str(pid)])


def _factory(
    tmp_path_factory: pytest.TempPathFactory, server_class: Callable[..., S], prefix: str
) -> Iterator[Callable[..., S]]:
    """The body of a ``*_factory`` fixture: start servers of ``server_class`` in fresh folders named after
    ``prefix``; stop every one of them at the end."""
    started: list[S] = []

    def start(**kwargs: Any) -> S:
        server = server_class(tmp_path_factory.mktemp(prefix), **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class _StartStop:
    """``with thing:`` runs ``thing.start()`` and, at the end, ``thing.stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FrontServer(_StartStop, Generic[M]):
    """What nginx, Apache and node test servers share: a private folder ``directory`` with the client CA
    bundle (``client-ca.pem``), the CRL bundle (``client-crl.pem``) and a throwaway server certificate
    (``server/``), a free port on 127.0.0.1, one process started by :meth:`start` and stopped by
    :meth:`stop` (also as a context manager), and reload marks: ``mark = server.reload_mark(); ...;
    server.wait_reloaded(mark)`` (``M`` is the type of a mark).

    A subclass names itself and its program (:attr:`name`, :attr:`programs`, :attr:`error`), writes its
    configuration and gives the
    command line (:meth:`_configure`), says when it is ready (:meth:`_ready`), and how to tell a reload
    (:meth:`reload_mark`, :meth:`wait_reloaded`).
    """

    #: The program's name in messages ("nginx", "Apache", "node").
    name: ClassVar[str]
    #: The program's names for :func:`~tests.conftest.need_program` (the first one found runs).
    programs: ClassVar[tuple[str, ...]]
    #: What the program is called in "this ... was started already".
    title: ClassVar[str]
    #: The exception this server raises.
    error: ClassVar[type[RuntimeError]]
    #: The configuration file (or script) in :attr:`directory`.
    conf_name: ClassVar[str]
    #: The file in :attr:`directory` that gets the program's stdout and stderr.
    output_name: ClassVar[str] = "stderr.log"
    #: Folders the program needs in :attr:`directory`.
    subdirs: ClassVar[tuple[str, ...]] = ()
    #: What :meth:`start` waits for, in messages.
    ready_what: ClassVar[str]
    #: The signal :attr:`reload_command` sends (None: the subclass gives its own command).
    reload_signal: ClassVar[signal.Signals | None] = None

    def __init__(
        self, directory: Path, *, ca_bundle: bytes, crl_bundle: bytes | None, port: int | None = None
    ) -> None:
        self.directory = directory.resolve()
        self.ca_bundle = ca_bundle
        self.crl_bundle = crl_bundle
        self.port = port or free_port()
        self.program = ""
        self.process: subprocess.Popen[bytes] | None = None

    # -- paths and addresses

    @property
    def conf_path(self) -> Path:
        return self.directory / self.conf_name

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
    def server_ca_path(self) -> Path:
        """The throwaway CA that signed this server's TLS certificate (for clients that verify it)."""
        return self.directory / "server" / "server-ca.pem"

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

    @property
    def reload_command(self) -> str:
        """``kill -SIG PID`` with :attr:`reload_signal`, for ``enroll-crl-sync --reload-command``."""
        if self.pid is None or self.reload_signal is None:
            raise self.error(f"{self.name} is not running")
        return _kill_command(self.reload_signal, self.pid)

    def get(self, client: IssuedClient | None = None) -> HttpsAnswer:
        """:func:`https_get` of :attr:`url`, presenting ``client``'s certificate (or none)."""
        if client is None:
            return https_get(self.url, server_ca=self.server_ca_path)
        return client.get(self.url, server_ca=self.server_ca_path)

    # -- logs and processes

    def error_log(self) -> str:
        """The error log so far (``info`` level: the reason a client certificate was refused is here)."""
        return _read(self.error_log_path)

    def _logs(self) -> str:
        """Everything the program wrote, for error messages."""
        return _read(self.directory / self.output_name) + "\n" + self.error_log()

    def children(self) -> set[int]:
        """PIDs of the running child processes."""
        if self.process is None or self.process.poll() is not None:
            return set()
        return _children(self.process.pid)

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise self.error(f"{self.name} is not running")
        return self.process

    def _wait_until(self, condition: Callable[[], bool], what: str) -> None:
        _wait_for(condition, what, process=self.process, name=self.name, logs=self._logs, error=self.error)

    # -- life cycle

    def _configure(self, server: ServerCertificate) -> list[str]:
        """Write the configuration (and check it); the command line that runs the server."""
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def reload_mark(self) -> M:
        """Note the server's state before something else (e.g. enroll-crl-sync) reloads it."""
        raise NotImplementedError

    def wait_reloaded(self, mark: M) -> None:
        """Wait until the server serves with what it loaded after :meth:`reload_mark`."""
        raise NotImplementedError

    def _reload(self, trigger: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """Take a reload mark, ``trigger(process)`` a reload, and wait for it."""
        process = self._require_running()
        mark = self.reload_mark()
        trigger(process)
        self.wait_reloaded(mark)

    def start(self) -> Self:
        """Write the files, start the server and wait until it accepts connections."""
        if self.process is not None:
            raise self.error(f"this {self.title} was started already")
        self.program = need_program(*self.programs)
        for sub in self.subdirs:
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        server = make_server_certificate(self.directory / "server")
        write_file(self.ca_path, self.ca_bundle)
        if self.crl_bundle is not None:
            write_file(self.crl_path, self.crl_bundle)
        argv = self._configure(server)
        with (self.directory / self.output_name).open("wb") as output:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        try:
            self._wait_until(self._ready, self.ready_what)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL; leftover children by PID). Safe to call twice."""
        _end_process(self.process, self.children())


# --- nginx -----------------------------------------------------------------------------------------------


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
{crl}        ssl_verify_client on;
        # Leaf, issuing CA, root: depth 2 is what a root + intermediate chain needs (nginx's default is 1).
        ssl_verify_depth {verify_depth};
{ocsp}
{location}
    }}
}}
"""

#: The test server's own ``location /`` (the default of :class:`NginxServer`): the client certificate it saw.
NGINX_ECHO_LOCATION = """\
        default_type text/plain;
        location / {
            return 200 "verify=$ssl_client_verify serial=$ssl_client_serial dn=$ssl_client_s_dn\\n";
        }
"""


class NginxServer(FrontServer[set[int]]):
    """A private nginx on 127.0.0.1:<free port> that requires a client certificate checked against a CA
    bundle and a CRL bundle (PEM, one CRL per CA in the chain).

    Use as a context manager (or through the :func:`nginx_factory` fixture)::

        with NginxServer(tmp_path / "nginx", ca_bundle=..., crl_bundle=...) as server:
            ...  # server.origin, server.url, server.update_crl(new_crl_bundle), server.error_log()

    The page at ``/`` answers ``verify=$ssl_client_verify serial=$ssl_client_serial dn=$ssl_client_s_dn``
    (:data:`NGINX_ECHO_LOCATION`); ``location`` replaces that with other ``location`` blocks (indented for
    the ``server`` block), e.g. a ``proxy_pass`` to the portal.

    ``crl_bundle=None`` leaves ``ssl_crl`` out. ``ocsp_responder`` turns on OCSP checks of client
    certificates (``ssl_ocsp MODE; ssl_ocsp_responder URL;``, nginx >= 1.19) and ``ocsp_cache`` adds
    ``ssl_ocsp_cache`` (e.g. ``"shared:ocsp:1m"``): without it nginx asks the responder on every handshake.
    """

    name = title = "nginx"
    programs = ("nginx",)  # Debian's, in /usr/sbin
    error = NginxError
    conf_name = "nginx.conf"
    subdirs = ("tmp",)
    ready_what = "nginx to accept connections"

    def __init__(
        self,
        directory: Path,
        *,
        ca_bundle: bytes,
        crl_bundle: bytes | None,
        port: int | None = None,
        verify_depth: int = 2,
        ocsp_responder: str | None = None,
        ocsp_mode: str = "on",
        ocsp_cache: str | None = None,
        location: str = NGINX_ECHO_LOCATION,
    ) -> None:
        super().__init__(directory, ca_bundle=ca_bundle, crl_bundle=crl_bundle, port=port)
        self.verify_depth = verify_depth
        self.ocsp_responder = ocsp_responder
        self.ocsp_mode = ocsp_mode
        self.ocsp_cache = ocsp_cache
        self.location = location

    @property
    def reload_command(self) -> str:
        """A shell-free command line that reloads this nginx (for ``enroll-crl-sync --reload-command``)."""
        return shlex.join(self._argv("-s", "reload"))

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
        return self.children()

    # -- life cycle

    def _configure(self, server: ServerCertificate) -> list[str]:
        """Write the configuration and check it with ``nginx -t``."""
        crl = ""
        if self.crl_bundle is not None:
            crl = f"        ssl_crl {self.crl_path};\n"
        ocsp = ""
        if self.ocsp_responder is not None:
            ocsp = f"        ssl_ocsp {self.ocsp_mode};\n        ssl_ocsp_responder {self.ocsp_responder};\n"
            if self.ocsp_cache is not None:
                ocsp += f"        ssl_ocsp_cache {self.ocsp_cache};\n"
        self.conf_path.write_text(
            _NGINX_CONF.format(
                dir=self.directory,
                port=self.port,
                server_cert=server.cert_path,
                server_key=server.key_path,
                verify_depth=self.verify_depth,
                crl=crl,
                ocsp=ocsp,
                location=self.location,
            )
        )
        checked = self._nginx("-t")
        if checked.returncode != 0:
            raise NginxError(f"nginx -t refused the configuration:\n{checked.stderr}")
        return self._argv()

    def _ready(self) -> bool:
        return _port_open(self.port) and bool(self.workers())

    def reload_mark(self) -> set[int]:
        """Note the current workers before something else (e.g. enroll-crl-sync) reloads nginx."""
        return self.workers()

    def wait_reloaded(self, mark: set[int]) -> None:
        """Wait until the workers noted by :meth:`reload_mark` have all been replaced by new ones, so the
        next connection is served by a worker that loaded the new configuration and CRL."""
        self._wait_until(
            lambda: bool(self.workers()) and not (self.workers() & mark),
            "the old nginx workers to exit after the reload",
        )

    def _reload_now(self, process: subprocess.Popen[bytes]) -> None:
        reloaded = self._nginx("-s", "reload")
        if reloaded.returncode != 0:
            raise NginxError(f"nginx -s reload failed:\n{reloaded.stderr}")

    def update_crl(self, pem: bytes) -> None:
        """Swap in a new CRL bundle and reload, as a front server's sync job does.

        The file is replaced atomically and checked with ``nginx -t``; if nginx refuses it the previous
        file is put back, nothing is reloaded (the old CRL keeps serving) and :class:`NginxError` is
        raised. Otherwise nginx reloads and this waits until every old worker has exited, so the next
        connection is served by a worker that loaded the new CRL.
        """
        self._require_running()
        if self.crl_bundle is None:
            raise NginxError("this nginx was started without ssl_crl")
        previous = self.crl_path.read_bytes()
        write_file(self.crl_path, pem)
        checked = self._nginx("-t")
        if checked.returncode != 0:
            write_file(self.crl_path, previous)
            raise NginxError(
                f"nginx -t refused the new CRL; not reloaded, the old CRL stays:\n{checked.stderr}"
            )
        self._reload(self._reload_now)
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
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=WAIT_SECONDS / 3)
        finally:
            # SIGTERM, then SIGKILL if it still runs; workers whose master died hard would keep the port:
            # end exactly those PIDs.
            _end_process(process, workers)


NginxFactory = Callable[..., NginxServer]


@pytest.fixture
def nginx_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFactory]:
    """Start private nginx servers: ``nginx_factory(ca_bundle=..., crl_bundle=...)``; all stopped at the end.

    Each gets its own directory (configuration, certificates, CRL, logs, pid, temp paths). nginx's master
    reads the certificates and CRLs, so the unprivileged workers need no access to pytest's 0700 tree.
    """
    yield from _factory(tmp_path_factory, NginxServer, "nginx")


# --- Apache ----------------------------------------------------------------------------------------------

#: Where Debian's apache2 keeps its modules; a standalone configuration loads them by absolute path.
APACHE_MODULES = Path("/usr/lib/apache2/modules")
_APACHE_MODULE_NAMES = ("mpm_event", "authz_core", "socache_shmcb", "ssl", "headers", "rewrite")


class ApacheError(RuntimeError):
    """Apache refused its configuration, did not start, exited (a broken CRL on a graceful restart makes
    it exit) or did not restart in time."""


_APACHE_CONF = """\
# Private test instance: everything under {dir}; started with apache2 -f {dir}/httpd.conf -DFOREGROUND
ServerRoot {dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
{modules}
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}/run
Mutex file:{dir}/run default
# Apache refuses to serve as root. The parent (root) reads the certificates and CRLs, so the children
# need no access to pytest's 0700 folders.
User www-data
Group www-data
ErrorLog {dir}/error.log
LogLevel info
# Few processes, no keep-alive, no TLS session cache or tickets: every request is a fresh handshake
# checked against the CRL the current children got from the parent at its last (graceful) restart.
StartServers 1
ServerLimit 4
ThreadsPerChild 4
MaxRequestWorkers 8
MinSpareThreads 1
MaxSpareThreads 8
KeepAlive Off
SSLSessionCache none
SSLSessionTickets off

<VirtualHost 127.0.0.1:{port}>
    SSLEngine on
    SSLCertificateFile {server_cert}
    SSLCertificateKeyFile {server_key}

    SSLCACertificateFile {dir}/client-ca.pem
    SSLCARevocationFile {dir}/client-crl.pem
    SSLCARevocationCheck {revocation_check}
    SSLVerifyClient require
    SSLVerifyDepth {verify_depth}

    # The page at / answers like the nginx test server's, from no file at all (the children could not
    # read one): mod_rewrite answers 200, and the "error document" for 200 is an expression.
    ErrorDocument 200 "verify=%{{SSL_CLIENT_VERIFY}} serial=%{{SSL_CLIENT_M_SERIAL}} dn=%{{SSL_CLIENT_S_DN}}"
    RewriteEngine on
    RewriteRule ^ - [R=200,L]
</VirtualHost>
"""


class ApacheServer(FrontServer[tuple[int, set[int]]]):
    """A private Apache (``apache2 -f DIR/httpd.conf -DFOREGROUND``) on 127.0.0.1:<free port> that requires
    a client certificate checked against a CA bundle and a PEM CRL bundle (``SSLCARevocationCheck chain``:
    one CRL per CA in the chain).

    Apache reads the CRL only at (graceful) restart: :meth:`graceful` sends ``SIGUSR1`` and waits for the
    new generation of children; :attr:`reload_command` is the same as a command line for
    ``enroll-crl-sync``. A broken CRL file makes Apache exit on that restart (``apache2 -t`` does not
    notice). The page at ``/`` answers ``verify=... serial=... dn=...`` from mod_ssl's variables.
    """

    name = title = "Apache"
    programs = ("apache2",)  # Debian's, in /usr/sbin
    error = ApacheError
    conf_name = "httpd.conf"
    subdirs = ("run",)
    ready_what = "Apache to accept connections"
    #: ``kill -USR1 PID``: a graceful restart.
    reload_signal = signal.SIGUSR1

    def __init__(
        self,
        directory: Path,
        *,
        ca_bundle: bytes,
        crl_bundle: bytes,
        port: int | None = None,
        verify_depth: int = 2,
        revocation_check: str = "chain",
    ) -> None:
        super().__init__(directory, ca_bundle=ca_bundle, crl_bundle=crl_bundle, port=port)
        self.verify_depth = verify_depth
        self.revocation_check = revocation_check

    def _generations(self) -> int:
        """How many times the parent has (re)read its configuration and resumed (AH00489)."""
        return self.error_log().count("resuming normal operations")

    def _apache(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.program, "-f", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )

    # -- life cycle

    def _configure(self, server: ServerCertificate) -> list[str]:
        """Write the configuration and check it with ``apache2 -t``."""
        modules = "\n".join(
            f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so" for name in _APACHE_MODULE_NAMES
        )
        self.conf_path.write_text(
            _APACHE_CONF.format(
                dir=self.directory,
                port=self.port,
                modules=modules,
                server_cert=server.cert_path,
                server_key=server.key_path,
                verify_depth=self.verify_depth,
                revocation_check=self.revocation_check,
            )
        )
        checked = self._apache("-t")
        if checked.returncode != 0:
            raise ApacheError(f"apache2 -t refused the configuration:\n{checked.stderr}")
        return [self.program, "-f", str(self.conf_path), "-DFOREGROUND"]

    def _ready(self) -> bool:
        return self._generations() >= 1 and bool(self.children()) and _port_open(self.port)

    def reload_mark(self) -> tuple[int, set[int]]:
        """Note the generation and children before something else (enroll-crl-sync) restarts Apache."""
        return self._generations(), self.children()

    def wait_reloaded(self, mark: tuple[int, set[int]]) -> None:
        """Wait until Apache has resumed after a graceful restart and every old child has exited, so the
        next connection is served by a child that has the new CRL. Raises if Apache exited instead."""
        generations, old = mark

        def restarted() -> bool:
            children = self.children()
            return self._generations() > generations and bool(children) and not (children & old)

        self._wait_until(restarted, "Apache's graceful restart (new children, old ones gone)")

    def graceful(self) -> None:
        """Graceful restart (``SIGUSR1``), waiting for it: see :meth:`wait_reloaded`."""
        self._reload(lambda process: process.send_signal(signal.SIGUSR1))

    def update_crl(self, pem: bytes) -> None:
        """Swap in a new CRL bundle (atomically) and restart gracefully. No check first: Apache has none
        that notices a broken CRL, and it exits on the restart (:class:`ApacheError`)."""
        write_file(self.crl_path, pem)
        self.graceful()
        self.crl_bundle = pem


ApacheFactory = Callable[..., ApacheServer]


@pytest.fixture
def apache_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheFactory]:
    """Start private Apache servers: ``apache_factory(ca_bundle=..., crl_bundle=...)``; stopped at the end."""
    yield from _factory(tmp_path_factory, ApacheServer, "apache")


# --- node ------------------------------------------------------------------------------------------------


class NodeError(RuntimeError):
    """node did not start, exited, or could not swap in a new CRL (the old one stays)."""


_NODE_SERVER_JS = r"""// Test HTTPS server for tests/realclients.py (NodeServer).
// Requires a client certificate checked against a CA bundle and a CRL bundle. SIGHUP, or with a watch
// interval a change of the CRL file, swaps in the new CRL with server.setSecureContext(): no restart.
// Prints "listening", "reloaded N", "reload failed: ..." and "tlsClientError: CODE" lines (a certificate
// refused by rejectUnauthorized is not among those: node ends that connection without an event).
"use strict";
const fs = require("fs");
const https = require("https");

const [keyPath, certPath, caPath, crlPath, port, watchMs] = process.argv.slice(2);

// Every PEM block as a string of its own: node's `crl` option reads only the FIRST CRL of a string or
// Buffer, and a chain needs one CRL per CA (else every client fails with UNABLE_TO_GET_CRL).
function pemBlocks(path, label) {
  const text = fs.readFileSync(path, "latin1");
  const blocks = text.match(new RegExp(`-----BEGIN ${label}-----[^-]+-----END ${label}-----`, "g")) || [];
  const begun = text.split(`-----BEGIN ${label}-----`).length - 1;
  if (blocks.length === 0 || blocks.length !== begun) {
    throw new Error(`${path}: ${begun} ${label} begun, ${blocks.length} complete`);
  }
  return blocks;
}

function secureContext() {
  return {
    key: fs.readFileSync(keyPath),
    cert: fs.readFileSync(certPath),
    ca: pemBlocks(caPath, "CERTIFICATE"),
    crl: pemBlocks(crlPath, "X509 CRL"),
  };
}

const server = https.createServer(
  { ...secureContext(), requestCert: true, rejectUnauthorized: true, sessionTimeout: 0 },
  (req, res) => {
    const peer = req.socket.getPeerCertificate();
    const dn = Object.entries(peer.subject || {}).map(([k, v]) => `${k}=${v}`).join(",");
    const verify = req.socket.authorized ? "SUCCESS" : `FAILED:${req.socket.authorizationError}`;
    res.writeHead(200, { "Content-Type": "text/plain", Connection: "close" });
    res.end(`verify=${verify} serial=${peer.serialNumber} dn=${dn}\n`);
  },
);
server.on("tlsClientError", (err) => console.log(`tlsClientError: ${err.code || err.message}`));

let reloads = 0;
function reload() {
  try {
    server.setSecureContext(secureContext());
    reloads += 1;
    console.log(`reloaded ${reloads}`);
  } catch (err) {
    console.log(`reload failed: ${err.message}`);
  }
}
process.on("SIGHUP", reload);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
if (Number(watchMs) > 0) {
  fs.watchFile(crlPath, { interval: Number(watchMs) }, (now, before) => {
    if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino) reload();
  });
}
server.listen(Number(port), "127.0.0.1", () => console.log("listening"));
"""


class NodeServer(FrontServer[int]):
    """``https.createServer({key, cert, ca, crl, requestCert: true, rejectUnauthorized: true})`` on
    127.0.0.1:<free port>, from a small script written to ``DIR/server.js``.

    A new CRL is swapped in with ``server.setSecureContext()``, no restart: on ``SIGHUP``
    (:attr:`reload_command` is ``kill -HUP PID`` for ``enroll-crl-sync``), or, with ``watch_interval``
    (seconds), when the CRL file changes (``fs.watchFile``; no reload command needed). A CRL node cannot
    load is logged and the old one stays. The page at ``/`` answers ``verify=... serial=... dn=...``.
    Handshakes that OpenSSL itself fails (no client certificate) are logged as ``tlsClientError: CODE``
    (see :meth:`log`); a certificate refused by ``rejectUnauthorized`` (revoked, unknown CA) is not:
    node then ends the connection after the handshake without any event or reason.
    """

    name = "node"
    title = "node server"
    programs = ("node", "nodejs")  # Debian's nodejs package installs node; older ones nodejs
    error = NodeError
    conf_name = "server.js"
    output_name = "output.log"
    ready_what = "node to listen"
    #: ``kill -HUP PID``: swap in the CRL file's current content.
    reload_signal = signal.SIGHUP

    def __init__(
        self,
        directory: Path,
        *,
        ca_bundle: bytes,
        crl_bundle: bytes,
        port: int | None = None,
        watch_interval: float | None = None,
    ) -> None:
        super().__init__(directory, ca_bundle=ca_bundle, crl_bundle=crl_bundle, port=port)
        self.watch_interval = watch_interval

    @property
    def script_path(self) -> Path:
        return self.conf_path

    def log(self) -> str:
        """What the server printed (stdout and stderr)."""
        return _read(self.directory / self.output_name)

    def _logs(self) -> str:
        return self.log()

    def _reload_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if line.startswith(("reloaded ", "reload failed: "))]

    def _configure(self, server: ServerCertificate) -> list[str]:
        self.script_path.write_text(_NODE_SERVER_JS)
        watch_ms = round(self.watch_interval * 1000) if self.watch_interval else 0
        argv = [self.program, str(self.script_path), str(server.key_path), str(server.cert_path)]
        return [*argv, str(self.ca_path), str(self.crl_path), str(self.port), str(watch_ms)]

    def _ready(self) -> bool:
        return "listening" in self.log().splitlines() and _port_open(self.port)

    def reload_mark(self) -> int:
        """Note how many reloads were logged, before something else (a signal, a file change) reloads."""
        return len(self._reload_lines())

    def wait_reloaded(self, mark: int) -> None:
        """Wait for the next reload after :meth:`reload_mark`; :class:`NodeError` if node refused the CRL."""
        self._wait_until(lambda: len(self._reload_lines()) > mark, "node to swap in the new CRL")
        line = self._reload_lines()[mark]
        if line.startswith("reload failed: "):
            raise NodeError(f"node kept its old CRL: {line}")

    def update_crl(self, pem: bytes) -> None:
        """Swap in a new CRL bundle: write it atomically, then SIGHUP (or let the file watch see it)."""

        def swap(process: subprocess.Popen[bytes]) -> None:
            write_file(self.crl_path, pem)
            if not self.watch_interval:
                process.send_signal(signal.SIGHUP)

        self._reload(swap)
        self.crl_bundle = pem


NodeFactory = Callable[..., NodeServer]


@pytest.fixture
def node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Start node HTTPS servers: ``node_factory(ca_bundle=..., crl_bundle=...)``; stopped at the end."""
    yield from _factory(tmp_path_factory, NodeServer, "node")


# --- the portal's side: issued certificates, CA and CRL bundles, enroll-crl-sync ------------------------


@dataclass(frozen=True, slots=True)
class IssuedClient:
    """A user's certificate as the portal issued it, and the key files that stayed on their machine
    (PEM certificate and key; a PKCS#12 file too once the user made one)."""

    username: str
    certificate: Certificate
    cert_path: Path
    key_path: Path
    pfx_path: Path | None = None
    passphrase: str | None = None

    def get(self, url: str, *, server_ca: Path) -> HttpsAnswer:
        """:func:`https_get` presenting this certificate."""
        return https_get(url, server_ca=server_ca, cert_path=self.cert_path, key_path=self.key_path)

    def client_certificate(self, origin: str) -> dict[str, str]:
        """Playwright's entry: the PKCS#12 file when there is one, else the PEM certificate and key."""
        if self.pfx_path is not None:
            return client_certificate(origin, pfx_path=self.pfx_path, passphrase=self.passphrase)
        return client_certificate(origin, cert_path=self.cert_path, key_path=self.key_path)


def issue_client(user: User, folder: Path) -> IssuedClient:
    """What a user does by hand: make a key, submit a CSR, get it approved, download the PEM certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = user.get_username()
    key_path = write_file(folder / f"{name}.key.pem", _key_pem(key), mode=0o600)
    request = flows.submit_csr(owner=user, data=make_csr(key))
    approved = flows.approve(request_id=request.pk)
    assert approved.certificate is not None, approved.reason
    pem = export_certificate(certificate=approved.certificate, fmt="pem").content
    return IssuedClient(name, approved.certificate, write_file(folder / f"{name}.cert.pem", pem), key_path)


def revoke(certificate: Certificate) -> None:
    """Revoke as the admin screen does (key compromise); the new CRL is published on commit, as in
    production (at once in a transactional test)."""
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)


def assert_accepted(answer: HttpsAnswer, client: IssuedClient) -> None:
    """The server let ``client`` in and saw its certificate: nginx and Apache print the serial as
    upper-case hex, as the portal stores it."""
    assert answer.status == 200, answer
    assert f"verify=SUCCESS serial={client.certificate.serial} " in answer.text, answer
    assert f"CN={client.username}" in answer.text, answer


def portal_chain(root: CertificateAuthority, kind: str) -> list[CertificateAuthority]:
    """``"root"``: the root alone issues; ``"intermediate"``: a new default issuing CA under the root."""
    if kind == "root":
        return [root]
    issuing = create_ca(name="Test Issuing CA", parent=root, make_default=True)
    return [root, issuing]


def portal_ca_bundle(chain: Sequence[CertificateAuthority]) -> bytes:
    """The CA certificates of the chain, PEM: what a front server trusts (and the sync's --ca-file)."""
    return b"".join(ca_certificate_pem(ca) for ca in chain)


def portal_crl_bundle(chain: Sequence[CertificateAuthority]) -> bytes:
    """One current PEM CRL for every CA of the chain, straight from the database."""
    return b"".join(crl_pem(current_crl(ca=ca)) for ca in chain)


def portal_ca_file(chain: Sequence[CertificateAuthority], folder: Path) -> Path:
    """The chain's CA bundle as ``folder/client-ca.pem``: the sync's ``--ca-file`` on a front server."""
    return write_file(folder / "client-ca.pem", portal_ca_bundle(chain))


def serve_chain(factory: Callable[..., S], chain: Sequence[CertificateAuthority], **kwargs: Any) -> S:
    """A front server from ``factory`` (e.g. ``nginx_factory``) trusting the chain, with its current CRLs."""
    return factory(ca_bundle=portal_ca_bundle(chain), crl_bundle=portal_crl_bundle(chain), **kwargs)


@pytest.fixture
def chain_kind() -> str:
    """Which chain the :func:`chain` fixture builds: ``"root"``, unless the test parametrizes
    ``chain_kind`` (``"root"`` or ``"intermediate"``, see :func:`portal_chain`)."""
    return "root"


@pytest.fixture
def chain(ca: CertificateAuthority, chain_kind: str) -> list[CertificateAuthority]:
    """The portal's chain of :func:`chain_kind`, root first; the last CA issues."""
    return portal_chain(ca, chain_kind)


@pytest.fixture
def chain_ca_file(chain: list[CertificateAuthority], tmp_path: Path) -> Path:
    """The chain's CA bundle in ``tmp_path`` (:func:`portal_ca_file`)."""
    return portal_ca_file(chain, tmp_path)


@pytest.fixture
def alice_client(chain: list[CertificateAuthority], alice: User, tmp_path: Path) -> IssuedClient:
    """alice's certificate from the chain's issuing CA, with her key files in ``tmp_path``."""
    return issue_client(alice, tmp_path)


@pytest.fixture
def bob_client(chain: list[CertificateAuthority], bob: User, tmp_path: Path) -> IssuedClient:
    """bob's certificate from the chain's issuing CA, with his key files in ``tmp_path``."""
    return issue_client(bob, tmp_path)


#: nginx's answer (HTTP 400) to a client certificate it checked and refused (revoked, no OCSP answer).
NGINX_REFUSED = "The SSL certificate error"


def assert_refused(answer: HttpsAnswer, reason: str = NGINX_REFUSED) -> None:
    """nginx refused the client certificate over HTTP (400 with ``reason``): the page was not reached."""
    assert answer.status == 400, answer
    assert reason in answer.text, answer
    assert "verify=" not in answer.text, answer


def load_crl_bundle(data: bytes) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM bundle, in order (``cryptography`` loads one CRL at a time)."""
    end = b"-----END X509 CRL-----"
    return [x509.load_pem_x509_crl(block + end + b"\n") for block in data.split(end) if block.strip()]


def crl_urls(base_url: str, chain: Sequence[CertificateAuthority]) -> list[str]:
    """The CRL URL of every CA of the chain on the portal at ``base_url`` (e.g. ``live_server.url``)."""
    return [f"{base_url.rstrip('/')}/pki/{ca.slug}.crl" for ca in chain]


def crl_sync_command() -> list[str]:
    """The installed console script ``enroll-crl-sync`` beside this Python, else ``python -m ca.crlsync``."""
    script = Path(sys.executable).parent / "enroll-crl-sync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ca.crlsync"]


def run_crl_sync(
    *,
    urls: Sequence[str],
    ca_file: Path,
    output: Path,
    reload_command: str | None = None,
    node: str | None = None,
    timeout: float = 5.0,
) -> subprocess.CompletedProcess[str]:
    """One run of ``enroll-crl-sync`` as a front server's timer runs it: a separate process, no Django
    settings and no database in its environment."""
    argv = crl_sync_command()
    for url in urls:
        argv += ["--url", url]
    argv += ["--ca-file", str(ca_file), "--output", str(output), "--timeout", str(timeout)]
    if reload_command is not None:
        argv += ["--reload-command", reload_command]
    if node is not None:
        argv += ["--node", node]
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(REPO)  # only for the ``-m`` fallback; the console script has the package
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout * len(urls) + 30, check=False, env=env
    )


def sync_and_reload(
    server: FrontServer[Any], *, urls: Sequence[str], ca_file: Path, reload: bool = True, node: str = "web1"
) -> subprocess.CompletedProcess[str]:
    """One ``enroll-crl-sync`` run that must install new CRLs into ``server.crl_path`` (with the server's
    :attr:`~FrontServer.reload_command` unless ``reload`` is false, e.g. for a server watching the file),
    then wait until the server has loaded them: the reload command and a file watch are asynchronous."""
    mark = server.reload_mark()
    run = run_crl_sync(
        urls=urls,
        ca_file=ca_file,
        output=server.crl_path,
        reload_command=server.reload_command if reload else None,
        node=node,
    )
    assert run.returncode == 0, run.stderr
    assert f"updated {server.crl_path}" in run.stdout, run.stdout
    server.wait_reloaded(mark)
    return run


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


#: The two widths every page is saved at (:func:`shoot`); browser contexts here start at desktop width.
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


def shoot(page: Page, name: str) -> None:
    """Save the page at desktop and at phone width: ``<screenshot_dir>/<name>-desktop.png`` and
    ``-phone.png`` (``name`` may start with a folder, e.g. ``"journey/01-sign-up"``)."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        path = screenshot_dir() / f"{name}-{label}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size(size)
        page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(DESKTOP)


def visit(
    browser: Browser, url: str, certificates: Sequence[dict[str, str]] = (), *, shot: str | None = None
) -> HttpsAnswer:
    """GET ``url`` in a fresh context presenting ``certificates`` (see :func:`client_certificate`): the
    HTTP status and the page's text; ``shot`` names its screenshots (:func:`shoot`)."""
    context = new_context(browser, certificates=certificates, viewport=DESKTOP)
    try:
        page = context.new_page()
        response = page.goto(url, wait_until="load")
        assert response is not None
        text = page.locator("body").inner_text()
        if shot:
            shoot(page, shot)
        return HttpsAnswer(response.status, text)
    finally:
        context.close()


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """A browser context that stays open across steps (the login cookie, IndexedDB) and its page.

    Playwright objects: make, use and close it in the Playwright thread, e.g.
    ``session = chromium.call(open_session, base)``, ``chromium.call(close_session, session)``.
    """

    context: BrowserContext
    page: Page
    base: str
    #: Content-Security-Policy violations the pages reported (:func:`close_session` asserts there are none).
    csp_violations: list[str] = field(default_factory=list)

    def open(self, path: str) -> Page:
        """Go to ``path`` under :attr:`base` (or to a full URL); the answer must not be an HTTP error."""
        response = self.page.goto(self.base + path if path.startswith("/") else path)
        assert response is not None
        assert response.status < 400, f"{path}: HTTP {response.status}"
        return self.page


def open_session(browser: Browser, /, base: str, **kwargs: Any) -> BrowserSession:
    """A :class:`BrowserSession` on ``base`` at desktop width (``kwargs`` as for :func:`new_context`)."""
    kwargs.setdefault("viewport", DESKTOP)
    context = new_context(browser, **kwargs)
    # Every violation of the portal's CSP (an inline script, style or handler, eval, another origin):
    # the page's securitypolicyviolation events, and Chromium's own console messages about them.
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: "
        "${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`));"
    )
    session = BrowserSession(context, context.new_page(), base)

    def on_console(message: ConsoleMessage) -> None:
        if "CSP violation" in message.text or "Content Security Policy" in message.text:
            session.csp_violations.append(f"{session.page.url}: {message.text}")

    session.page.on("console", on_console)
    return session


def close_session(_browser: Browser, session: BrowserSession) -> None:
    session.context.close()
    assert session.csp_violations == [], "\n".join(session.csp_violations)


class ChromiumThread(_StartStop):
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


@pytest.fixture
def chromium() -> Iterator[ChromiumThread]:
    """Headless Debian Chromium for one test (in its own thread: see :class:`ChromiumThread`)."""
    with ChromiumThread() as running:
        yield running


# --- the portal itself under load: gunicorn instances behind one nginx, and a cookie-keeping client ---------


@dataclass(frozen=True, slots=True)
class WebAnswer:
    """One HTTP answer as :class:`WebClient` got it (header names in lower case, last one wins)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def location(self) -> str:
        """The path (and query) a redirect points to, without scheme and host."""
        parts = urllib.parse.urlsplit(self.headers.get("location", ""))
        return parts.path + (f"?{parts.query}" if parts.query else "")


class WebClient:
    """A browser without JavaScript for load tests: one keep-alive HTTP/1.1 connection to ``base``
    (``http://127.0.0.1:PORT``), its own cookies, Django's CSRF token on every POST (form field and
    ``X-CSRFToken`` header, from the ``csrftoken`` cookie), no redirects followed.

    ``on_answer(method, path, status)`` sees every answer (for counting); a connection error is passed on
    as status 0 and raised. Not shared between threads: one client per simulated person.
    """

    def __init__(
        self,
        base: str,
        *,
        on_answer: Callable[[str, str, int], None] | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"not an http://HOST:PORT URL: {base}")
        self.base = base.rstrip("/")
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self.on_answer = on_answer
        self.cookies: dict[str, str] = {}
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _remember(self, set_cookies: list[str]) -> None:
        for header in set_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)  # deleted (logout, a consumed message)
                else:
                    self.cookies[name] = morsel.value

    def request(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> WebAnswer:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._connection.request(method, path, body=body or None, headers=sent)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            if self.on_answer is not None:
                self.on_answer(method, path, 0)
            raise
        self._remember(response.msg.get_all("Set-Cookie") or [])
        if response.will_close:
            self.close()
        if self.on_answer is not None:
            self.on_answer(method, path, response.status)
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return WebAnswer(response.status, answer_headers, data)

    def get(self, path: str) -> WebAnswer:
        return self.request("GET", path)

    def post(self, path: str, form: Mapping[str, str | Sequence[str]]) -> WebAnswer:
        """POST ``form`` (a list value repeats the field) with the CSRF token of the ``csrftoken`` cookie."""
        token = self.cookies.get("csrftoken", "")
        body = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": token}, doseq=True).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": token}
        return self.request("POST", path, body=body, headers=headers)


def _http_answers(port: int, path: str) -> bool:
    """Whether a server on 127.0.0.1:``port`` answers a GET of ``path`` with anything below 500."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class PortalError(RuntimeError):
    """A portal instance (gunicorn) or the nginx in front of the instances did not start."""


class PortalInstance(_StartStop):
    """One portal instance: gunicorn serving ``enroll.wsgi:application`` on 127.0.0.1:<free port> with
    ``workers`` processes of ``threads`` threads each, in ``env`` (the whole environment of the process:
    DATABASE_URL, DJANGO_SETTINGS_MODULE, ...), logs in ``directory``. Started when its login page answers;
    stopped by PID (also as a context manager)."""

    def __init__(
        self,
        directory: Path,
        *,
        env: dict[str, str],
        workers: int = 2,
        threads: int = 2,
        port: int | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.env = env
        self.workers = workers
        self.threads = threads
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log_path(self) -> Path:
        return self.directory / "access.log"

    @property
    def error_log_path(self) -> Path:
        return self.directory / "error.log"

    def statuses(self) -> list[int]:
        """The status of every answer in the access log so far."""
        return [int(line.split()[0]) for line in _read(self.access_log_path).splitlines() if line.strip()]

    def _logs(self) -> str:
        return _read(self.error_log_path)

    def server_errors(self) -> list[str]:
        """Django's "Internal Server Error: PATH" log entries so far, each with its exception's last line
        and PostgreSQL's DETAIL (which lock a deadlock was about)."""
        found: list[str] = []
        for block in _read(self.error_log_path).split("Internal Server Error: ")[1:]:
            lines = block.splitlines()
            last = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Detected|Refused)\b", line)]
            detail = [line.strip() for line in lines if line.startswith(("DETAIL:", "Process "))]
            found.append(" | ".join([lines[0], *last[-1:], *dict.fromkeys(detail)]))
        return found

    def start(self) -> Self:
        if self.process is not None:
            raise PortalError("this portal instance was started already")
        gunicorn = need_program("gunicorn")
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            gunicorn,
            "enroll.wsgi:application",
            f"--bind=127.0.0.1:{self.port}",
            "--worker-class=gthread",
            f"--workers={self.workers}",
            f"--threads={self.threads}",
            "--graceful-timeout=5",
            f"--access-logfile={self.access_log_path}",
            "--access-logformat=%(s)s %(m)s %(U)s %(L)s",
            f"--error-logfile={self.error_log_path}",
        ]
        with self.error_log_path.open("ab") as output:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        try:
            _wait_for(
                lambda: _http_answers(self.port, "/accounts/login/"),
                f"gunicorn on port {self.port} to answer",
                process=self.process,
                name="gunicorn",
                logs=self._logs,
                error=PortalError,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM gunicorn (it stops its workers), SIGKILL what is left. Safe to call twice."""
        running = self.process is not None and self.process.poll() is None
        children = _children(self.process.pid) if running and self.process is not None else set()
        _end_process(self.process, children)


_BALANCER_CONF = """\
# Private load balancer: everything under {dir}; started with nginx -p {dir} -c {dir}/nginx.conf
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    # status, the instance that answered, its status, seconds, the request line
    log_format balancer "$status\\t$upstream_addr\\t$upstream_status\\t$request_time\\t$request";
    access_log {dir}/access.log balancer;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

    upstream portal {{
{servers}
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name 127.0.0.1;
        client_max_body_size 1m;

        location / {{
            proxy_pass http://portal;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Never buffer answers to temp files: as root the workers run as nobody, and pytest's
            # folders are 0700.
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class BalancerLogLine:
    """One answer in the balancer's access log: status, the instance (``127.0.0.1:PORT``) that gave it."""

    status: int
    upstream: str
    request: str


class NginxBalancer(_StartStop):
    """A private nginx on 127.0.0.1:<free port> over plain HTTP in front of ``upstreams`` (``host:port``),
    round robin; forwards Host, X-Forwarded-For and X-Forwarded-Proto. Stopped with ``nginx -s stop``,
    then by PID (also as a context manager)."""

    def __init__(self, directory: Path, *, upstreams: Sequence[str], port: int | None = None) -> None:
        self.directory = directory.resolve()
        self.upstreams = list(upstreams)
        self.port = port or free_port()
        self.program = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.directory / "nginx.conf"

    def _argv(self, *args: str) -> list[str]:
        log = str(self.directory / "error.log")
        return [self.program, "-p", f"{self.directory}/", "-c", str(self.conf_path), "-e", log, *args]

    def _logs(self) -> str:
        return _read(self.directory / "stderr.log") + "\n" + _read(self.directory / "error.log")

    def access_log(self) -> list[BalancerLogLine]:
        lines = []
        for line in _read(self.directory / "access.log").splitlines():
            status, upstream, _upstream_status, _seconds, request = line.split("\t", 4)
            lines.append(BalancerLogLine(int(status), upstream, request))
        return lines

    def start(self) -> Self:
        if self.process is not None:
            raise PortalError("this nginx was started already")
        self.program = need_program("nginx")
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server {upstream};" for upstream in self.upstreams)
        self.conf_path.write_text(_BALANCER_CONF.format(dir=self.directory, port=self.port, servers=servers))
        checked = subprocess.run(
            self._argv("-t"), capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
        )
        if checked.returncode != 0:
            raise PortalError(f"nginx -t refused the balancer configuration:\n{checked.stderr}")
        with (self.directory / "stderr.log").open("wb") as output:
            self.process = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        try:
            _wait_for(
                lambda: _port_open(self.port) and bool(_children(self.process.pid if self.process else 0)),
                "the nginx balancer to accept connections",
                process=self.process,
                name="nginx",
                logs=self._logs,
                error=PortalError,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop nginx (``nginx -s stop``, then by PID). Safe to call twice."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        workers = _children(process.pid)
        try:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(
                    self._argv("-s", "stop"), capture_output=True, timeout=WAIT_SECONDS, check=False
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=WAIT_SECONDS / 3)
        finally:
            _end_process(process, workers)
