"""Apache for tests: :class:`ApacheServer`, Debian's apache2 standalone (``-f DIR/httpd.conf -DFOREGROUND``)
requiring client certificates checked against a CA bundle and a CRL bundle.

Apache reads the CRL only at a (graceful) restart and answers a revoked client with a TLS alert; a broken
CRL makes it exit on that restart (docs/FRONT-SERVERS.md).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.harness.front import FrontServer, kill_command
from tests.harness.process import WAIT_SECONDS, ManagedProcess, port_open, write_file
from tests.harness.tls import ServerCertificate

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
        return self._generations() >= 1 and bool(self.children()) and port_open(self.port)

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


#: ``apache_factory(ca_bundle=..., crl_bundle=..., **options)`` (the fixture, tests/harness/fixtures.py).
ApacheFactory = Callable[..., ApacheServer]


# --- Debian's own layout, with a generated site (tests/realclients/test_front_server_bootstrap.py) ---------

#: What ``a2enmod ssl headers proxy proxy_http`` enables (ssl depends on socache_shmcb).
DEBIAN_SITE_MODULES = ("ssl", "socache_shmcb", "headers", "proxy", "proxy_http")
DEBIAN_CONFDIR = Path("/etc/apache2")


def debian_layout(directory: Path, *, site: str, listen_80_443: bool = True) -> tuple[Path, dict[str, str]]:
    """A copy of Debian's /etc/apache2 under ``directory`` with the generated ``site`` in sites-enabled and
    :data:`DEBIAN_SITE_MODULES` enabled (as ``a2enmod`` and ``a2ensite`` do), and the environment that
    /etc/apache2/envvars would give, pointing into ``directory``: (the configuration folder, that
    environment). ``listen_80_443=False`` empties ports.conf, so that a private instance binds only the
    site's own ``Listen``."""
    confdir = directory / "apache2"
    shutil.copytree(DEBIAN_CONFDIR, confdir, symlinks=True)
    for module in DEBIAN_SITE_MODULES:
        for suffix in (".load", ".conf"):
            available = confdir / "mods-available" / f"{module}{suffix}"
            enabled = confdir / "mods-enabled" / available.name
            if available.exists() and not enabled.exists():
                enabled.symlink_to(available)
    (confdir / "sites-enabled" / "enroll-client-auth.conf").write_text(site)
    if not listen_80_443:
        (confdir / "ports.conf").write_text(
            "# emptied: this private instance listens only where its site says\n"
        )
    for folder in ("run", "lock", "log"):
        (directory / folder).mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C",
        "APACHE_CONFDIR": str(confdir),
        "APACHE_RUN_USER": "www-data",
        "APACHE_RUN_GROUP": "www-data",
        "APACHE_PID_FILE": str(directory / "run" / "apache2.pid"),
        "APACHE_RUN_DIR": str(directory / "run"),
        "APACHE_LOCK_DIR": str(directory / "lock"),
        "APACHE_LOG_DIR": str(directory / "log"),
    }
    return confdir, env


class DebianApache(ManagedProcess):
    """Debian's apache2 in a copy of its own layout (:func:`debian_layout`) serving a generated site that
    listens on :attr:`port`: ``apache2 -d CONFDIR -DFOREGROUND``. :attr:`reload_command` is a graceful
    restart (``kill -USR1``, what ``systemctl reload apache2`` ends in)."""

    name = title = "Apache"
    programs = ("apache2",)
    error = ApacheError
    ready_what = "Apache with the generated site to accept connections"

    def __init__(self, directory: Path, *, site: str, port: int) -> None:
        super().__init__(directory, port=port)
        self.site = site

    @property
    def error_log_path(self) -> Path:
        return self.directory / "log" / "error.log"

    @property
    def reload_command(self) -> str:
        if self.pid is None:
            raise ApacheError("Apache is not running")
        return kill_command(signal.SIGUSR1, self.pid)

    def _prepare(self) -> list[str]:
        confdir, self.env = debian_layout(self.directory, site=self.site, listen_80_443=False)
        argv = [self.program, "-d", str(confdir), "-f", str(confdir / "apache2.conf")]
        checked = subprocess.run(
            [*argv, "-t"], capture_output=True, text=True, timeout=WAIT_SECONDS, check=False, env=self.env
        )
        if checked.returncode != 0:
            raise ApacheError(f"apache2 -t refused the generated site:\n{checked.stderr}")
        return [*argv, "-DFOREGROUND"]

    def _ready(self) -> bool:
        return bool(self.children()) and port_open(self.port)
