"""``enroll-crl-sync`` as a front server runs it: :class:`CrlSyncService`, the sync in service mode
(``--every``) as a :class:`~tests.harness.process.ManagedProcess`, reporting as a registered node with its
token; and :func:`reach_seconds`, the time from a revocation until handshakes are refused for good, at
the client (``nginx -s reload`` and a graceful restart return before the new workers serve, so the sync's
own log is never the measure).

Shared by the real-server tests (tests/realclients/test_revocation_reach.py) and the benchmark
(``bench/reach.py``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.process import REPO, ManagedProcess, read_text, write_file
from tests.harness.tls import HttpsAnswer


class CrlSyncError(RuntimeError):
    """enroll-crl-sync did not start its service loop, or exited."""


def sync_environment() -> dict[str, str]:
    """This process's environment without Django's: the sync has no settings and no database."""
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(REPO)
    return env


class CrlSyncService(ManagedProcess):
    """``enroll-crl-sync --every EVERY --node NODE --token-file DIR/node.token --url ... --ca-file ...
    --output ... [--reload-command ...]``, as the generated systemd service runs it; its output in
    ``DIR/output.log``. Ready when it has announced its loop; stopped with SIGTERM (it exits 0)."""

    name = title = "enroll-crl-sync"
    programs = ("enroll-crl-sync",)  # the console script beside this Python
    error = CrlSyncError
    output_name = "output.log"
    ready_what = "enroll-crl-sync to start its service loop"

    def __init__(
        self,
        directory: Path,
        *,
        urls: Sequence[str],
        ca_file: Path,
        output: Path,
        node: str,
        token: str,
        every: float = 2.0,
        reload_command: str | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        super().__init__(directory, env=sync_environment(), cwd=REPO)
        #: A whole command line to run instead (e.g. a generated unit's ExecStart): its own token file.
        self.argv = list(argv) if argv is not None else None
        self.urls = list(urls)
        self.ca_file = ca_file
        self.output = output
        self.node = node
        self.token = token
        self.every = every
        self.reload_command = reload_command

    @classmethod
    def command(cls, directory: Path, argv: Sequence[str]) -> CrlSyncService:
        """The sync exactly as ``argv`` runs it (a generated unit's ExecStart), not yet started."""
        return cls(directory, urls=[], ca_file=Path(), output=Path(), node="", token="", argv=argv)

    @property
    def token_path(self) -> Path:
        return self.directory / "node.token"

    def log(self) -> str:
        """What the sync printed so far (one line per change or failure)."""
        return read_text(self.output_path)

    def _prepare(self) -> list[str]:
        if self.argv is not None:
            return self.argv
        write_file(self.token_path, (self.token + "\n").encode(), mode=0o600)
        argv = [self.program]
        for url in self.urls:
            argv += ["--url", url]
        argv += ["--ca-file", str(self.ca_file), "--output", str(self.output), "--every", f"{self.every:g}"]
        argv += ["--node", self.node, "--token-file", str(self.token_path)]
        if self.reload_command is not None:
            argv += ["--reload-command", self.reload_command]
        return argv

    def _ready(self) -> bool:
        return "keeping " in self.log()


def refused(answer: HttpsAnswer) -> bool:
    """A new handshake with the client's certificate failed, or the server answered 4xx (nginx: 400)."""
    return answer.status is None or 400 <= answer.status < 500


@dataclass(frozen=True, slots=True)
class Reach:
    """Seconds from each revocation to the first refused handshake; their median and maximum."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def maximum(self) -> float:
        return max(self.seconds)

    def __str__(self) -> str:
        runs = ", ".join(f"{s:.2f}" for s in self.seconds)
        return f"median {self.median:.2f} s, max {self.maximum:.2f} s over {len(self.seconds)} runs ({runs})"


def reach_seconds(
    attempt: Callable[[], HttpsAnswer],
    revoke: Callable[[], None],
    *,
    every: float = 0.1,
    give_up: float = 30.0,
    settled: int = 5,
) -> float:
    """Revoke (the "click": the revocation service, which publishes the CRL on commit), then try a new
    TLS handshake every ``every`` seconds until the client is refused for good: the seconds from the click
    to the first refusal of ``settled`` in a row, at the client. One refusal is not enough: while nginx
    reloads, an old worker that has not yet seen its signal can still accept a handshake after a new
    worker refused one, so a let-in after a refusal starts the count again. :class:`AssertionError` if the
    client is not refused for good within ``give_up`` seconds."""
    clicked = time.monotonic()
    revoke()
    first_refusal: float | None = None
    in_a_row = 0
    while True:
        answer = attempt()
        now = time.monotonic()
        if refused(answer):
            first_refusal = now if first_refusal is None else first_refusal
            in_a_row += 1
            if in_a_row >= settled:
                return first_refusal - clicked
        else:
            first_refusal, in_a_row = None, 0
        assert now - clicked < give_up, f"still let in {now - clicked:.1f} s after the revocation: {answer}"
        time.sleep(max(0.0, every - (time.monotonic() - now)))
