"""nginx for tests: :class:`NginxServer`, a private HTTPS server requiring client certificates (CA bundle,
CRL bundle, optionally OCSP), and :class:`NginxBalancer`, a plain-HTTP load balancer in front of portal
instances. Both are a :class:`NginxProcess`: ``nginx -p DIR -c DIR/nginx.conf``, checked with ``nginx -t``,
stopped with ``nginx -s stop`` and then by PID (master and workers).

nginx reads its CRL only at start or reload and needs one PEM CRL per CA in the chain; it refuses a revoked
client with HTTP 400 (docs/FRONT-SERVERS.md).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.front import FrontServer
from tests.harness.process import WAIT_SECONDS, ManagedProcess, port_open, read_text, write_file
from tests.harness.tls import HttpsAnswer, ServerCertificate


class NginxError(RuntimeError):
    """nginx did not start, refused a configuration (``nginx -t``) or did not reload in time."""


class NginxProcess(ManagedProcess):
    """What every nginx here shares: its command line (prefix, configuration and error log in
    :attr:`directory`), ``nginx -t`` and ``-s``, its workers, ready when it accepts connections and has
    workers, stopped with ``nginx -s stop`` before the PIDs."""

    name = title = "nginx"
    programs = ("nginx",)  # Debian's, in /usr/sbin
    error = NginxError
    conf_name = "nginx.conf"
    subdirs = ("tmp",)
    ready_what = "nginx to accept connections"

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

    def _check(self, what: str) -> None:
        """``nginx -t``; :class:`NginxError` naming ``what`` if it refuses."""
        checked = self._nginx("-t")
        if checked.returncode != 0:
            raise NginxError(f"nginx -t refused {what}:\n{checked.stderr}")

    def workers(self) -> set[int]:
        """PIDs of the running worker processes."""
        return self.children()

    def _ready(self) -> bool:
        return port_open(self.port) and bool(self.workers())

    def _shutdown(self, process: subprocess.Popen[bytes]) -> None:
        """``nginx -s stop`` and a short wait; workers whose master died hard are ended by PID after."""
        self._nginx("-s", "stop")
        process.wait(timeout=WAIT_SECONDS / 3)


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


class NginxServer(FrontServer[set[int]], NginxProcess):
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
        self._check("the configuration")
        return self._argv()

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


_GENERATED_CONF = """\
# Private instance around a generated server block: everything else under {dir}
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
    ssl_session_cache off;
    ssl_session_tickets off;

{server}
}}
"""


class GeneratedNginx(NginxProcess):
    """A private nginx serving a ``server { ... }`` block as ``manage.py frontend_config nginx`` printed it
    (which must listen on :attr:`port`), inside the smallest ``http`` block a private instance needs:
    what a person does with the generated file in Debian's sites-enabled, without the system service."""

    ready_what = "nginx with the generated server block to accept connections"

    def __init__(self, directory: Path, *, server_block: str, port: int) -> None:
        super().__init__(directory, port=port)
        self.server_block = server_block

    @property
    def reload_command(self) -> str:
        """``nginx -s reload`` for this instance (what ``systemctl reload nginx`` does to the system one)."""
        return shlex.join(self._argv("-s", "reload"))

    def _prepare(self) -> list[str]:
        self.conf_path.write_text(_GENERATED_CONF.format(dir=self.directory, server=self.server_block))
        self._check("the generated configuration")
        return self._argv()


#: ``nginx_factory(ca_bundle=..., crl_bundle=..., **options)`` (the fixture, tests/harness/fixtures.py).
NginxFactory = Callable[..., NginxServer]

#: nginx's answer (HTTP 400) to a client certificate it checked and refused (revoked, no OCSP answer).
NGINX_REFUSED = "The SSL certificate error"


def assert_refused(answer: HttpsAnswer, reason: str = NGINX_REFUSED) -> None:
    """nginx refused the client certificate over HTTP (400 with ``reason``): the page was not reached."""
    assert answer.status == 400, answer
    assert reason in answer.text, answer
    assert "verify=" not in answer.text, answer


# --- the load balancer in front of portal instances (tests/realclients/test_load.py) -----------------------

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


class NginxBalancer(NginxProcess):
    """A private nginx on 127.0.0.1:<free port> over plain HTTP in front of ``upstreams`` (``host:port``),
    round robin; forwards Host, X-Forwarded-For and X-Forwarded-Proto. Stopped with ``nginx -s stop``,
    then by PID (also as a context manager)."""

    ready_what = "the nginx balancer to accept connections"

    def __init__(self, directory: Path, *, upstreams: Sequence[str], port: int | None = None) -> None:
        super().__init__(directory, port=port)
        self.upstreams = list(upstreams)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[BalancerLogLine]:
        lines = []
        for line in read_text(self.directory / "access.log").splitlines():
            status, upstream, _upstream_status, _seconds, request = line.split("\t", 4)
            lines.append(BalancerLogLine(int(status), upstream, request))
        return lines

    def _prepare(self) -> list[str]:
        servers = "\n".join(f"        server {upstream};" for upstream in self.upstreams)
        self.conf_path.write_text(_BALANCER_CONF.format(dir=self.directory, port=self.port, servers=servers))
        self._check("the balancer configuration")
        return self._argv()
