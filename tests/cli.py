"""Drive manage.py as a real process against a fresh SQLite installation, as an operator's script would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The body of :meth:`ManagePy.batch` (after ``COMMANDS = ...``): each command through ``call_command``.
BATCH = """
import contextlib, io, json
from django.core.management import call_command
lines = []
for args in json.loads(COMMANDS):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # print() in shell -c, as the command's own output
        call_command(*args, stdout=out)
    lines.append((out.getvalue().splitlines() or [""])[-1])
print(json.dumps(lines))
"""


class ManagePy:
    """A fresh installation in ``folder``: its own database, data dir, secret key and CA passphrase."""

    def __init__(self, folder: Path) -> None:
        self.database = folder / "e2e.sqlite3"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "ENROLL_", "DATABASE_"))
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="enroll.settings",
            DJANGO_SECRET_KEY="end-to-end-secret-key-0123456789abcdefghijklmnop",
            DATABASE_URL=f"sqlite:///{self.database}",
            ENROLL_DATA_DIR=str(folder / "data"),
            ENROLL_CA_PASSPHRASE="end-to-end-passphrase-0123",
            ENROLL_PUBLIC_URL="http://127.0.0.1:8000",
        )

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: bytes = b"") -> str:
        """Run a command that must succeed; its last line of output."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode().splitlines()[-1]

    def refused(self, *args: str, stdin: bytes = b"") -> str:
        """Run a command that must fail with exit status 1 and one line, no traceback; that line."""
        result = self.run(*args, stdin=stdin)
        stderr = result.stderr.decode()
        assert result.returncode == 1, (result.returncode, stderr)
        assert "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        return stderr

    def batch(self, *commands: tuple[str, ...]) -> list[str]:
        """Run commands that must succeed one after the other in ONE manage.py process (``call_command``:
        a process start costs about a second of Django set-up); the last line of each one's output ("" for
        none). For a test's set-up: the commands whose exit status or error line it checks run alone."""
        result: list[str] = json.loads(
            self.ok("shell", "-c", f"COMMANDS = {json.dumps(commands)!r}\n{BATCH}")
        )
        return result
