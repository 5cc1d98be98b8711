"""Signer figures: bulk approval and the CRL republish, in process and through ``manage.py signer``.

The signer runs as a real process on a socket in a temporary folder, on the benchmark's throwaway database,
with the benchmark's own settings (so its lint setting is the in-process run's). The web side signs through
it exactly as a web worker does: ``ENROLL_SIGNER_SOCKET`` set, :func:`ca.services.keys.key_backend` returns
the signer's backend, so a bulk approval sends each chunk's certificates in one ``sign-many`` message, which
the signer checks with one query per kind of fact and lints in worker processes (the web side then lints
nothing itself). Also a round trip on one kept connection beside one connection per request, which is
why the client keeps its connection.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings

from bench.common import Output, at_least, emit, fill_revocations
from bench.issuance import _submitted
from ca.clock import utcnow
from ca.models import CertificateAuthority
from ca.services import authorities, keys
from ca.services import crl as ca_crl
from ca.signer import client, protocol
from enroll import flows

ROOT = Path(__file__).resolve().parent.parent

#: Issue 25: the signer costs at most a quarter of bulk issuance throughput.
SHARE_OF_IN_PROCESS = 0.75
#: Below this many requests the throughput is mostly start-up: no target applies.
TARGET_FROM = 100


@contextmanager
def running_signer(*, lint: bool) -> Iterator[str]:
    """``manage.py signer`` on a socket in a temporary folder, on this database; yields the socket's path."""
    folder = tempfile.mkdtemp(prefix="enroll-bench-signer-")
    path = os.path.join(folder, "signer.sock")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "ENROLL_BENCH_BASE_SETTINGS": os.environ["DJANGO_SETTINGS_MODULE"],
        "ENROLL_BENCH_DATABASE_NAME": str(connection.settings_dict["NAME"]),
        "ENROLL_LINT_BEFORE_SIGN": "1" if lint else "0",
        "ENROLL_DATA_DIR": str(settings.DATA_DIR),
    }
    command = [sys.executable, str(ROOT / "manage.py"), "signer", "--socket", path]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping(path=path)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the signer did not start") from None
                time.sleep(0.1)
        yield path
    finally:
        client.close()
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _round_trips(out: Output, path: str, count: int) -> None:
    """Pings on one kept connection, and each on a connection of its own."""
    started = time.perf_counter()
    for _ in range(count):
        client.ping(path=path)
    kept = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for _ in range(count):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            protocol.write_frame(sock, protocol.ping_message())
            protocol.read_frame(sock, limit=protocol.MAX_REPLY)
    fresh = (time.perf_counter() - started) / count
    emit(
        out,
        figure="signer_round_trip",
        kept_connection_ms=round(kept * 1000, 3),
        connection_per_request_ms=round(fresh * 1000, 3),
    )


def _bulk(owner: User, admin: User, count: int) -> float:
    request_ids = _submitted(owner, [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)])
    started = time.perf_counter()
    results = flows.approve_many(request_ids=request_ids, actor=admin)
    seconds = time.perf_counter() - started
    issued = sum(result.outcome == flows.ApprovalOutcome.ISSUED for result in results)
    if issued != count:
        reasons = {result.reason for result in results if result.outcome != flows.ApprovalOutcome.ISSUED}
        raise RuntimeError(f"only {issued} of {count} issued: {sorted(reasons)[:3]}")
    return count / seconds


def _signed_elsewhere() -> None:
    """The figure is the signer's only if this process opened no key meanwhile."""
    if keys._key_cache:
        raise RuntimeError("this process loaded a CA key: it did not sign through the signer")


def bench_signer(out: Output, count: int, crl_size: int) -> None:
    """Bulk approval (lint on and off) and the CRL republish of ``crl_size`` entries, in process and
    through the signer; the share the signer keeps of the in-process throughput, with the target."""
    issuing = CertificateAuthority.objects.filter(is_default=True).first() or authorities.create_ca(
        name="Bench Signer CA", slug="bench-signer", make_default=True
    )
    owner = User.objects.create_user("bench-signer-user", "bench-signer@example.com")
    admin = User.objects.create_superuser("bench-signer-admin", "bench-signer-admin@example.com", "not-used")
    keys.key_backend(issuing)  # the in-process run starts with its key loaded, as a busy web worker has it
    for lint in (True, False):
        with override_settings(ENROLL_LINT_BEFORE_SIGN=lint), running_signer(lint=lint) as path:
            if lint:
                _round_trips(out, path, 2000)
            in_process = _bulk(owner, admin, count)
            keys.clear_key_cache()
            with override_settings(ENROLL_SIGNER_SOCKET=path):
                through = _bulk(owner, admin, count)
            _signed_elsewhere()
            keys.key_backend(issuing)
        share = through / in_process
        emit(
            out,
            figure="signer_bulk_approval",
            database=connection.vendor,
            ca_key="ec-p256",
            lint=lint,
            requests=count,
            in_process_per_second=round(in_process, 1),
            signer_per_second=round(through, 1),
            share_of_in_process=round(share, 3),
            **(at_least(share, SHARE_OF_IN_PROCESS, "of in-process") if count >= TARGET_FROM else {}),
        )
    if crl_size:
        ca = authorities.create_ca(name="Bench Signer CRL CA", slug="bench-signer-crl", make_default=False)
        fill_revocations(ca, owner, crl_size, utcnow())
        ca_crl.publish_crl(ca=ca)  # the carried-over entries are what a republish reads
        started = time.perf_counter()
        ca_crl.publish_crl(ca=ca)
        in_process = time.perf_counter() - started
        keys.clear_key_cache()
        with running_signer(lint=True) as path, override_settings(ENROLL_SIGNER_SOCKET=path):
            started = time.perf_counter()
            ca_crl.publish_crl(ca=ca)
            through = time.perf_counter() - started
        _signed_elsewhere()
        emit(
            out,
            figure="signer_crl_republish",
            database=connection.vendor,
            entries=crl_size,
            in_process_seconds=round(in_process, 3),
            signer_seconds=round(through, 3),
        )
