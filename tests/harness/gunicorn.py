"""gunicorn for tests: :class:`PortalInstance`, the portal itself (``enroll.wsgi:application``) as a real
WSGI server process, e.g. two of them behind :class:`~tests.harness.nginx.NginxBalancer` in the load test.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness.process import REPO, ManagedProcess, http_answers, read_text


class PortalError(RuntimeError):
    """A portal instance (gunicorn) did not start."""


class PortalInstance(ManagedProcess):
    """One portal instance: gunicorn serving ``enroll.wsgi:application`` on 127.0.0.1:<free port> with
    ``workers`` processes of ``threads`` threads each, in ``env`` (the whole environment of the process:
    DATABASE_URL, DJANGO_SETTINGS_MODULE, ...), logs in ``directory``. Started when its login page answers;
    stopped by PID, gunicorn's workers too (also as a context manager)."""

    name = "gunicorn"
    title = "portal instance"
    programs = ("gunicorn",)
    error = PortalError
    ready_what = "gunicorn to answer on its login page"
    #: gunicorn's own error log gets its stdout and stderr too.
    output_name = "error.log"

    def __init__(
        self,
        directory: Path,
        *,
        env: dict[str, str],
        workers: int = 2,
        threads: int = 2,
        port: int | None = None,
    ) -> None:
        super().__init__(directory, port=port, env=env, cwd=REPO)
        self.workers = workers
        self.threads = threads

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log_path(self) -> Path:
        return self.directory / "access.log"

    def statuses(self) -> list[int]:
        """The status of every answer in the access log so far."""
        return [int(line.split()[0]) for line in read_text(self.access_log_path).splitlines() if line.strip()]

    def server_errors(self) -> list[str]:
        """Django's "Internal Server Error: PATH" log entries so far, each with its exception's last line
        and PostgreSQL's DETAIL (which lock a deadlock was about)."""
        found: list[str] = []
        for block in self.error_log().split("Internal Server Error: ")[1:]:
            lines = block.splitlines()
            last = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Detected|Refused)\b", line)]
            detail = [line.strip() for line in lines if line.startswith(("DETAIL:", "Process "))]
            found.append(" | ".join([lines[0], *last[-1:], *dict.fromkeys(detail)]))
        return found

    def _prepare(self) -> list[str]:
        return [
            self.program,
            "enroll.wsgi:application",
            f"--bind=127.0.0.1:{self.port}",
            "--worker-class=gthread",
            f"--workers={self.workers}",
            f"--threads={self.threads}",
            "--graceful-timeout=5",
            # As docs/OPERATIONS.md says for production: certmonger's SCEP GETs are about 5.5 KB, more
            # than gunicorn's default request line (4094).
            "--limit-request-line=8190",
            "--preload",  # as docs/OPERATIONS.md says: the master loads the portal, the workers fork warm
            f"--access-logfile={self.access_log_path}",
            "--access-logformat=%(s)s %(m)s %(U)s %(L)s",
            f"--error-logfile={self.error_log_path}",
        ]

    def _ready(self) -> bool:
        return http_answers(self.port, "/accounts/login/")
