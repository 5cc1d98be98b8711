"""What every part of the benchmark uses: JSON lines, targets, the throwaway database, measuring in a
forked child, and placeholder certificate rows.

Peak memory is measured in a forked child (its maximum resident set size minus the parent's at fork
time), since ``cryptography`` allocates in Rust where tracemalloc cannot see.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import setup_test_environment, teardown_test_environment

from ca.models import Certificate, CertificateAuthority, Revocation, RevocationReason
from ca.pki.serials import format_serial, new_serial


class Output(Protocol):
    def write(self, text: str, /) -> Any: ...
    def flush(self) -> Any: ...


def emit(out: Output, **figure: Any) -> None:
    out.write(json.dumps(figure) + "\n")
    out.flush()


def at_most(value: float, limit: float | None, unit: str) -> dict[str, Any]:
    """The target fields of a figure that must stay at or below ``limit`` (none when there is no target)."""
    if limit is None:
        return {}
    return {"target": f"<= {limit:g} {unit}", "pass": value <= limit}


def at_least(value: float, limit: float, what: str) -> dict[str, Any]:
    return {"target": f">= {limit:g} {what}", "pass": value >= limit}


@contextmanager
def throwaway_database() -> Iterator[None]:
    """Create a fresh test database (SQLite on disk, or bench_<name> on PostgreSQL); destroy it after."""
    settings_dict = connection.settings_dict
    tmp = None
    if connection.vendor == "sqlite":
        tmp = tempfile.mkdtemp(prefix="enroll-bench-")
        settings_dict["TEST"]["NAME"] = os.path.join(tmp, "bench.sqlite3")
    else:  # never test_<name>: a test run on the same server may be using that one
        settings_dict["TEST"]["NAME"] = f"bench_{settings_dict['NAME']}"
    setup_test_environment()  # e-mail to memory, the test client's host allowed
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def in_child(work: Callable[[], float]) -> tuple[float, int]:
    """Run ``work`` in a forked child; return (its seconds, its peak RSS growth in KiB)."""
    read_fd, write_fd = os.pipe()
    # Close before forking: a child closing an inherited PostgreSQL connection would end the parent's
    # session too. Both reconnect on their next query.
    connection.close()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            connection.ensure_connection()  # connecting is not part of the figure
            base = _maxrss_kib()
            seconds = work()
            os.write(write_fd, json.dumps([seconds, _maxrss_kib() - base]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        payload = reader.read()
    os.waitpid(pid, 0)
    if not payload:
        raise RuntimeError("benchmark child failed")
    seconds, peak = json.loads(payload)
    return float(seconds), int(peak)


def timed(action: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    return run


def certificates(ca: CertificateAuthority, owner: User, count: int, now: dt.datetime) -> list[Certificate]:
    """``count`` certificate rows (placeholder DER: the CRL needs only serials and expiry)."""
    return Certificate.objects.bulk_create(
        Certificate(
            ca=ca,
            serial=format_serial(serial=new_serial()),
            der=b"\x30\x00",
            subject="CN=bench",
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=365),
            owner=owner,
            fingerprint_sha256="0" * 64,
            spki_sha256="0" * 64,
            profile="client",
            request_sha256="0" * 64,
            created_at=now,
        )
        for _ in range(count)
    )


def fill_revocations(ca: CertificateAuthority, owner: User, count: int, now: dt.datetime) -> None:
    """Revoke certificates (a day ago) until ``ca`` has ``count`` revocations."""
    existing = Revocation.objects.filter(certificate__ca=ca).count()
    a_day_ago = now - dt.timedelta(days=1)
    batch = 5000
    for start in range(existing, count, batch):
        revoked = certificates(ca, owner, min(batch, count - start), now)
        Revocation.objects.bulk_create(
            Revocation(certificate=c, reason=RevocationReason.SUPERSEDED, revoked_at=a_day_ago)
            for c in revoked
        )
