"""The one start/wait/stop shape every program of the harness has (:class:`ManagedProcess`), and the small
things it is made of: free ports, files written atomically, a process's children, waiting with a deadline.

A :class:`ManagedProcess` owns a private folder and a free port on 127.0.0.1, starts ONE process
(:meth:`~ManagedProcess.start`: write the files, ``Popen``, wait until :meth:`~ManagedProcess._ready`),
and stops exactly what it started (:meth:`~ManagedProcess.stop`: the program's own shutdown if it has one,
then SIGTERM/SIGKILL by PID, and the children it had, by PID). It is a context manager too. nginx,
Apache, node and gunicorn are subclasses; Chromium (started by Playwright in a thread of its own) shares
only the :class:`StartStop` shape.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import pytest

from tests.harness.programs import need_program

#: The repository's top folder (the working directory of the portal's processes).
REPO = Path(__file__).resolve().parents[2]

#: Upper bound for every wait on a started program (start, reload, stop).
WAIT_SECONDS = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_answers(port: int, path: str) -> bool:
    """Whether a server on 127.0.0.1:``port`` answers a GET of ``path`` with anything below 500."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def write_file(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` atomically: a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
    return path


def read_text(path: Path) -> str:
    """The file's text so far; empty if it does not exist (yet)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def children(pid: int) -> set[int]:
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


def wait_for(
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


def end_process(process: subprocess.Popen[bytes] | None, leftovers: set[int]) -> None:
    """SIGTERM ``process`` (then SIGKILL), and SIGKILL exactly those PIDs of ``leftovers`` (its children
    noted before) that outlived it."""
    try:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=WAIT_SECONDS / 3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=WAIT_SECONDS / 3)
    finally:
        for pid in leftovers:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class StartStop:
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


class ManagedProcess(StartStop):
    """One program in a private folder ``directory`` on 127.0.0.1:``port`` (a free port unless given).

    :meth:`start` finds the program (:func:`~tests.harness.programs.need_program`, so a missing one
    skips, or fails in CI), makes :attr:`subdirs`, lets the subclass write its files and give the command
    line (:meth:`_prepare`), starts it with stdout and stderr appended to :attr:`output_name`, and waits
    until :meth:`_ready` (raising :attr:`error` with the logs if it exits or time runs out; what it
    started is stopped then). :meth:`stop` runs the program's own shutdown (:meth:`_shutdown`, e.g.
    ``nginx -s stop``), then ends the process by PID (SIGTERM, SIGKILL) and SIGKILLs the children it had
    that outlived it. Safe to call twice.
    """

    #: The program's name in messages ("nginx", "Apache", "node", "gunicorn").
    name: ClassVar[str]
    #: What the program is called in "this ... was started already".
    title: ClassVar[str]
    #: The program's names for :func:`~tests.harness.programs.need_program` (the first one found runs).
    programs: ClassVar[tuple[str, ...]]
    #: The exception this program's harness raises.
    error: ClassVar[type[RuntimeError]]
    #: What :meth:`start` waits for, in messages.
    ready_what: ClassVar[str]
    #: The configuration file (or script) in :attr:`directory`, if the program has one.
    conf_name: ClassVar[str] = ""
    #: The file in :attr:`directory` that gets the program's stdout and stderr.
    output_name: ClassVar[str] = "stderr.log"
    #: Folders the program needs in :attr:`directory`.
    subdirs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        #: The whole environment of the process (None: this process's).
        self.env = env
        self.cwd = cwd
        #: The program's path, once :meth:`start` has found it.
        self.program = ""
        self.process: subprocess.Popen[bytes] | None = None

    # -- paths and state

    @property
    def conf_path(self) -> Path:
        return self.directory / self.conf_name

    @property
    def output_path(self) -> Path:
        return self.directory / self.output_name

    @property
    def error_log_path(self) -> Path:
        return self.directory / "error.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def error_log(self) -> str:
        """The program's error log so far."""
        return read_text(self.error_log_path)

    def _logs(self) -> str:
        """Everything the program wrote, for error messages."""
        output = read_text(self.output_path)
        return output if self.output_path == self.error_log_path else output + "\n" + self.error_log()

    def children(self) -> set[int]:
        """PIDs of the running child processes (none once the process has exited)."""
        if self.process is None or self.process.poll() is not None:
            return set()
        return children(self.process.pid)

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise self.error(f"{self.name} is not running")
        return self.process

    def _wait_until(self, condition: Callable[[], bool], what: str) -> None:
        wait_for(condition, what, process=self.process, name=self.name, logs=self._logs, error=self.error)

    # -- what a subclass gives

    def _prepare(self) -> list[str]:
        """Write the program's files (and check them); the command line that runs it."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the started program serves (polled by :meth:`start`)."""
        raise NotImplementedError

    def _shutdown(self, process: subprocess.Popen[bytes]) -> None:
        """The program's own way to stop, tried before SIGTERM (none by default)."""

    # -- life cycle

    def start(self) -> Self:
        """Find the program, write its files, start it and wait until it is ready."""
        if self.process is not None:
            raise self.error(f"this {self.title} was started already")
        self.program = need_program(*self.programs)
        self.directory.mkdir(parents=True, exist_ok=True)
        for sub in self.subdirs:
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        argv = self._prepare()
        with self.output_path.open("ab") as output:
            self.process = subprocess.Popen(
                argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        try:
            self._wait_until(self._ready, self.ready_what)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the program: its own shutdown, then by PID; its leftover children by PID. Safe twice."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        leftovers = children(process.pid)
        try:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self._shutdown(process)
        finally:
            end_process(process, leftovers)


P = TypeVar("P", bound=ManagedProcess)


def started_in(
    tmp_path_factory: pytest.TempPathFactory, process_class: Callable[..., P], prefix: str
) -> Iterator[Callable[..., P]]:
    """The body of a ``*_factory`` fixture: start programs of ``process_class`` in fresh folders named
    after ``prefix``; stop every one of them at the end."""
    started: list[P] = []

    def start(**kwargs: Any) -> P:
        process = process_class(tmp_path_factory.mktemp(prefix), **kwargs)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()
