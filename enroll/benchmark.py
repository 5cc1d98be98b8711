"""Benchmarks: CRL build and publication at 1k/10k/100k entries, issuance through the flow.

Runs in a throwaway test database (created and destroyed here, like Django's test runner), so it never
touches real data. Each figure is printed as one line of JSON. Peak memory of a CRL build is measured in
a forked child (its maximum resident set size minus the parent's at fork time), since `cryptography`
allocates in Rust where tracemalloc cannot see.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.db import connection

from ca import services
from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, Revocation, RevocationReason
from ca.pki import crl as pki_crl
from ca.pki.profiles import SubjectInfo, build_client_certificate, get_profile, validity_window
from ca.pki.serials import format_serial, new_serial
from enroll import flows


class Output(Protocol):
    def write(self, text: str, /) -> Any: ...
    def flush(self) -> Any: ...


def emit(out: Output, **figure: Any) -> None:
    out.write(json.dumps(figure) + "\n")
    out.flush()


@contextmanager
def throwaway_database() -> Iterator[None]:
    """Create a fresh test database (SQLite on disk, or test_<name> on PostgreSQL); destroy it after."""
    settings_dict = connection.settings_dict
    tmp = None
    if connection.vendor == "sqlite":
        tmp = tempfile.mkdtemp(prefix="enroll-bench-")
        settings_dict["TEST"]["NAME"] = os.path.join(tmp, "bench.sqlite3")
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


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


def _fill_revocations(ca: CertificateAuthority, owner: User, count: int, now: dt.datetime) -> None:
    """Insert ``count`` revoked certificates (placeholder DER) for the CRL benchmarks."""
    existing = Revocation.objects.filter(certificate__ca=ca).count()
    batch = 5000
    for start in range(existing, count, batch):
        size = min(batch, count - start)
        certificates = Certificate.objects.bulk_create(
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
            for _ in range(size)
        )
        Revocation.objects.bulk_create(
            Revocation(certificate=c, reason=RevocationReason.SUPERSEDED, revoked_at=now)
            for c in certificates
        )


def bench_crl(out: Output, sizes: list[int]) -> None:
    now = utcnow()
    ca = services.create_ca(name="Bench CRL CA", slug="bench-crl", make_default=False)
    owner = User.objects.create_user("bench-crl-owner")
    key = services.load_key(ca)
    for size in sorted(sizes):
        _fill_revocations(ca, owner, size, now)
        entries = [
            pki_crl.CrlEntry(serial=new_serial(), revoked_at=now, reason=x509.ReasonFlags.superseded)
            for _ in range(size)
        ]

        def build(entries: list[pki_crl.CrlEntry] = entries) -> float:
            started = time.perf_counter()
            pki_crl.build_crl(
                issuer=ca.certificate,
                issuer_key=key,
                number=1,
                this_update=now,
                next_update=now + dt.timedelta(days=7),
                entries=entries,
            )
            return time.perf_counter() - started

        seconds, peak = in_child(build)
        emit(
            out,
            figure="crl_build_core",
            entries=size,
            seconds=round(seconds, 4),
            peak_rss_mib=round(peak / 1024, 1),
        )

        def publish() -> float:
            started = time.perf_counter()
            services.publish_crl(ca=ca)
            return time.perf_counter() - started

        seconds, peak = in_child(publish)
        emit(
            out,
            figure="crl_publish_with_db",
            database=connection.vendor,
            entries=size,
            seconds=round(seconds, 4),
            peak_rss_mib=round(peak / 1024, 1),
        )


def bench_issuance(out: Output, count: int) -> None:
    ca = services.create_ca(name="Bench Issuing CA", slug="bench-issuing", make_default=True)
    key = services.load_key(ca)
    owner = User.objects.create_user("bench-user", "bench@example.com")
    public_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]

    now = utcnow()
    not_before, not_after = validity_window(now=now, validity=dt.timedelta(days=365), issuer=ca.certificate)
    started = time.perf_counter()
    for private_key in public_keys:
        build_client_certificate(
            profile=get_profile(name="client"),
            public_key=private_key.public_key(),
            subject=SubjectInfo(common_name="bench-user", email="bench@example.com"),
            issuer=ca.certificate,
            issuer_key=key,
            serial=new_serial(),
            not_before=not_before,
            not_after=not_after,
            urls=ca.urls,
        ).public_bytes(serialization.Encoding.DER)
    raw = count / (time.perf_counter() - started)
    emit(out, figure="issue_raw_cryptography", ca_key="ec-p256", certificates=count, per_second=round(raw, 1))

    csrs = [
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(private_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
        for private_key in public_keys
    ]
    request_ids = [flows.submit_csr(owner=owner, data=csr).pk for csr in csrs]
    started = time.perf_counter()
    for request_id in request_ids:
        flows.approve(request_id=request_id)
    rate = count / (time.perf_counter() - started)
    emit(
        out,
        figure="issue_through_flow",
        database=connection.vendor,
        ca_key="ec-p256",
        certificates=count,
        per_second=round(rate, 1),
        raw_per_second=round(raw, 1),
        share_of_raw=round(rate / raw, 3),
    )


def run(*, out: Output = sys.stdout, crl_sizes: list[int], issue_count: int) -> None:
    with throwaway_database():
        if issue_count:
            bench_issuance(out, issue_count)
        if crl_sizes:
            bench_crl(out, crl_sizes)
