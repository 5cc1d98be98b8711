"""What the nginx, Apache and node test servers share (:class:`FrontServer`): a client-certificate HTTPS
server trusting a CA bundle and a CRL bundle, with reload marks.

Every server takes a reload mark before something else reloads it (``enroll-crl-sync --reload-command
server.reload_command``) and waits for it: ``mark = server.reload_mark(); ...; server.wait_reloaded(mark)``.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from tests.harness.process import ManagedProcess, write_file
from tests.harness.programs import need_program
from tests.harness.tls import HttpsAnswer, ServerCertificate, https_get, make_server_certificate

if TYPE_CHECKING:
    from tests.harness.portal import IssuedClient

#: What a server's reload mark is (see :class:`FrontServer`).
M = TypeVar("M")


def kill_command(sig: signal.Signals, pid: int) -> str:
    """``kill -SIG PID`` as a command line for ``enroll-crl-sync --reload-command`` (split, no shell)."""
    return shlex.join([need_program("kill"), f"-{sig.name.removeprefix('SIG')}", str(pid)])


class FrontServer(ManagedProcess, Generic[M]):
    """A :class:`~tests.harness.process.ManagedProcess` that serves HTTPS with client certificates: its
    folder holds the client CA bundle (``client-ca.pem``), the CRL bundle (``client-crl.pem``) and a
    throwaway server certificate (``server/``); reload marks: ``mark = server.reload_mark(); ...;
    server.wait_reloaded(mark)`` (``M`` is the type of a mark).

    A subclass writes its configuration and gives the command line (:meth:`_configure`), says when it is
    ready (:meth:`_ready`), and how to tell a reload (:meth:`reload_mark`, :meth:`wait_reloaded`).
    """

    #: The signal :attr:`reload_command` sends (None: the subclass gives its own command).
    reload_signal: ClassVar[signal.Signals | None] = None

    def __init__(
        self, directory: Path, *, ca_bundle: bytes, crl_bundle: bytes | None, port: int | None = None
    ) -> None:
        super().__init__(directory, port=port)
        self.ca_bundle = ca_bundle
        self.crl_bundle = crl_bundle

    # -- paths and addresses

    @property
    def crl_path(self) -> Path:
        return self.directory / "client-crl.pem"

    @property
    def ca_path(self) -> Path:
        return self.directory / "client-ca.pem"

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
    def reload_command(self) -> str:
        """``kill -SIG PID`` with :attr:`reload_signal`, for ``enroll-crl-sync --reload-command``."""
        if self.pid is None or self.reload_signal is None:
            raise self.error(f"{self.name} is not running")
        return kill_command(self.reload_signal, self.pid)

    def get(self, client: IssuedClient | None = None) -> HttpsAnswer:
        """GET :attr:`url` (``https_get``), presenting ``client``'s certificate or none."""
        if client is None:
            return https_get(self.url, server_ca=self.server_ca_path)
        return client.get(self.url, server_ca=self.server_ca_path)

    # -- life cycle

    def _prepare(self) -> list[str]:
        """The server certificate, the CA and CRL bundles, then the subclass's configuration."""
        server = make_server_certificate(self.directory / "server")
        write_file(self.ca_path, self.ca_bundle)
        if self.crl_bundle is not None:
            write_file(self.crl_path, self.crl_bundle)
        return self._configure(server)

    def _configure(self, server: ServerCertificate) -> list[str]:
        """Write the configuration (and check it); the command line that runs the server."""
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
