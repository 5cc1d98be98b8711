"""Benchmarks (``manage.py benchmark``): CRL publication, revocation to served CRL, issuance, CRL endpoint.

Runs in a throwaway test database (created and destroyed here, like Django's test runner), so it never
touches real data. Each figure is printed as one line of JSON; where the issue set a target, the line
says it (``target``) and whether it was met (``pass``). Raw ``cryptography`` figures measured in the same
run stand beside the portal's. Peak memory is measured in a forked child (its maximum resident set size
minus the parent's at fork time), since ``cryptography`` allocates in Rust where tracemalloc cannot see.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPConnection, HTTPResponse
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment
from django.urls import reverse

from ca import services
from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, CrlPublication, Revocation, RevocationReason
from ca.pki import crl as pki_crl
from ca.pki.profiles import SubjectInfo, build_client_certificate, get_profile, validity_window
from ca.pki.serials import format_serial, new_serial
from enroll import flows

#: Targets of issue 6 ("Speed"): CRL republish with the database read, by number of entries.
REPUBLISH_SECONDS = {100_000: 1.0, 1_000_000: 12.0}
REPUBLISH_PEAK_MIB = {1_000_000: 1024.0}
REVOCATION_TO_SERVED_SECONDS = {100_000: 1.5}
#: The CRL endpoint (200) against a trivial view through the same middleware; a 304 at least as fast.
HTTP_CRL_SHARE = 0.9
HTTP_304_SHARE = 1.0
HTTP_CRL_ENTRIES = 1000
HTTP_ROUNDS = 3


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


def _certificates(ca: CertificateAuthority, owner: User, count: int, now: dt.datetime) -> list[Certificate]:
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


def _fill_revocations(ca: CertificateAuthority, owner: User, count: int, now: dt.datetime) -> None:
    """Revoke certificates (a day ago) until ``ca`` has ``count`` revocations."""
    existing = Revocation.objects.filter(certificate__ca=ca).count()
    a_day_ago = now - dt.timedelta(days=1)
    batch = 5000
    for start in range(existing, count, batch):
        certificates = _certificates(ca, owner, min(batch, count - start), now)
        Revocation.objects.bulk_create(
            Revocation(certificate=c, reason=RevocationReason.SUPERSEDED, revoked_at=a_day_ago)
            for c in certificates
        )


def _raw_entries(count: int, now: dt.datetime) -> list[pki_crl.CrlEntry]:
    return [
        pki_crl.CrlEntry(serial=new_serial(), revoked_at=now, reason=x509.ReasonFlags.superseded)
        for _ in range(count)
    ]


def bench_crl(out: Output, sizes: list[int]) -> None:
    """Per size: raw build and raw carry-over beside the portal's full build, republish and revocation."""
    now = utcnow()
    ca = services.create_ca(name="Bench CRL CA", slug="bench-crl", make_default=False)
    owner = User.objects.create_user("bench-crl-owner")
    key = services.load_key(ca)
    database = connection.vendor
    for size in sorted(sizes):
        _fill_revocations(ca, owner, size, now)

        def raw_build(size: int = size) -> None:
            pki_crl.build_crl(
                issuer=ca.certificate,
                issuer_key=key,
                number=1,
                this_update=now,
                next_update=now + dt.timedelta(days=7),
                entries=_raw_entries(size, now),
            ).public_bytes(serialization.Encoding.DER)

        raw_full, raw_full_peak = in_child(timed(raw_build))
        emit(
            out,
            figure="crl_build_raw_cryptography",
            entries=size,
            seconds=round(raw_full, 3),
            peak_rss_mib=round(raw_full_peak / 1024, 1),
        )

        # No previous CRL: every entry is read from the database and built.
        CrlPublication.objects.filter(ca=ca).delete()
        full, full_peak = in_child(timed(lambda: services.publish_crl(ca=ca)))
        emit(
            out,
            figure="crl_publish_full_build",
            database=database,
            entries=size,
            seconds=round(full, 3),
            peak_rss_mib=round(full_peak / 1024, 1),
            raw_seconds=round(raw_full, 3),
        )

        previous_der = bytes(CrlPublication.objects.filter(ca=ca).latest().der)

        def raw_carry_over(previous_der: bytes = previous_der) -> None:
            base = pki_crl.previous_crl(issuer=ca.certificate, previous_der=previous_der)
            pki_crl.build_crl(
                issuer=ca.certificate,
                issuer_key=key,
                number=2,
                this_update=now,
                next_update=now + dt.timedelta(days=7),
                entries=_raw_entries(1, now),
                carried_over=base.entries,
            ).public_bytes(serialization.Encoding.DER)

        raw_carry, raw_carry_peak = in_child(timed(raw_carry_over))
        del previous_der
        emit(
            out,
            figure="crl_carry_over_raw_cryptography",
            entries=size + 1,
            seconds=round(raw_carry, 3),
            peak_rss_mib=round(raw_carry_peak / 1024, 1),
        )

        # One revocation since the CRL (recorded, its CRL not yet signed): the everyday republish.
        Revocation.objects.create(
            certificate=_certificates(ca, owner, 1, now)[0],
            reason=RevocationReason.KEY_COMPROMISE,
            revoked_at=utcnow(),
        )
        seconds, peak = in_child(timed(lambda: services.publish_crl(ca=ca)))
        peak_mib = peak / 1024
        limits = at_most(seconds, REPUBLISH_SECONDS.get(size), "s")
        memory = at_most(peak_mib, REPUBLISH_PEAK_MIB.get(size), "MiB")
        emit(
            out,
            figure="crl_republish",
            database=database,
            entries=size + 1,
            seconds=round(seconds, 3),
            peak_rss_mib=round(peak_mib, 1),
            raw_seconds=round(raw_carry, 3),
            **limits,
            **({"memory_target": memory["target"], "memory_pass": memory["pass"]} if memory else {}),
        )
        bench_revocation_to_served(out, ca=ca, owner=owner, size=size, now=now)


def bench_revocation_to_served(
    out: Output, *, ca: CertificateAuthority, owner: User, size: int, now: dt.datetime
) -> None:
    """From revoke_certificate (commit, then the CRL signed on commit) to the endpoint serving it."""
    certificate = _certificates(ca, owner, 1, now)[0]
    client = Client()
    url = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    client.get(url)  # the endpoint has served the CRL before: its bytes are in this process's cache
    started = time.perf_counter()
    services.revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    response = client.get(url)
    seconds = time.perf_counter() - started
    listed = x509.load_der_x509_crl(response.content).get_revoked_certificate_by_serial_number(
        certificate.serial_int
    )
    emit(
        out,
        figure="revocation_to_served",
        database=connection.vendor,
        entries=size + 2,
        seconds=round(seconds, 3),
        served_status=response.status_code,
        listed=listed is not None,
        **at_most(seconds, REVOCATION_TO_SERVED_SECONDS.get(size), "s"),
    )


# --- issuance ----------------------------------------------------------------------------------------


def _submitted(owner: User, keys: list[ec.EllipticCurvePrivateKey]) -> list[int]:
    csrs = [
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(private_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
        for private_key in keys
    ]
    return [flows.submit_csr(owner=owner, data=csr).pk for csr in csrs]


def bench_issuance(out: Output, count: int, single: int) -> None:
    ca = services.create_ca(name="Bench Issuing CA", slug="bench-issuing", make_default=True)
    key = services.load_key(ca)
    owner = User.objects.create_user("bench-user", "bench@example.com")
    admin = User.objects.create_superuser("bench-admin", "bench-admin@example.com", "not-used")
    private_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2 * count + single)]

    now = utcnow()
    not_before, not_after = validity_window(now=now, validity=dt.timedelta(days=365), issuer=ca.certificate)
    started = time.perf_counter()
    for private_key in private_keys[:count]:
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

    for lint, keys in ((True, private_keys[:count]), (False, private_keys[count : 2 * count])):
        request_ids = _submitted(owner, keys)
        with override_settings(ENROLL_LINT_BEFORE_SIGN=lint):
            started = time.perf_counter()
            results = flows.approve_many(request_ids=request_ids, actor=admin)
            seconds = time.perf_counter() - started
        issued = sum(result.outcome == flows.ApprovalOutcome.ISSUED for result in results)
        emit(
            out,
            figure="issue_bulk_approval",
            database=connection.vendor,
            ca_key="ec-p256",
            lint=lint,
            requests=count,
            issued=issued,
            seconds=round(seconds, 3),
            per_second=round(count / seconds, 1),
            raw_per_second=round(raw, 1),
            share_of_raw=round(count / seconds / raw, 3),
        )

    if single:
        request_ids = _submitted(owner, private_keys[2 * count :])
        started = time.perf_counter()
        for request_id in request_ids:
            flows.approve(request_id=request_id, by=admin)
        rate = single / (time.perf_counter() - started)
        emit(
            out,
            figure="issue_single_approvals",
            database=connection.vendor,
            ca_key="ec-p256",
            lint=bool(settings.ENROLL_LINT_BEFORE_SIGN),
            requests=single,
            per_second=round(rate, 1),
            raw_per_second=round(raw, 1),
            share_of_raw=round(rate / raw, 3),
        )


# --- the CRL endpoint under gunicorn and wrk ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[HTTPResponse, bytes]:
    client = HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response, response.read()
    finally:
        client.close()


@contextmanager
def gunicorn(*, workers: int = 2, threads: int = 4) -> Iterator[int]:
    """gunicorn (threaded workers, as the load test runs it) with :mod:`enroll.bench_settings` on a free
    loopback port; yields the port."""
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "enroll.bench_settings",
        "ENROLL_BENCH_BASE_SETTINGS": str(settings.SETTINGS_MODULE),
        "ENROLL_BENCH_DATABASE_NAME": str(connection.settings_dict["NAME"]),
    }
    command = [
        sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "gthread",
        "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        "enroll.wsgi:application",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(port, "/bench/trivial")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


_REQUESTS_PER_SECOND = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def wrk_rate(wrk: str, url: str, *, seconds: int, headers: dict[str, str] | None = None) -> float:
    """Requests per second wrk gets from ``url`` (2 threads, 8 connections)."""
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        [wrk, "-t2", "-c8", f"-d{seconds}s", *extra, url], check=True, capture_output=True, text=True
    )
    if failed := _NON_2XX.search(result.stdout):
        raise RuntimeError(f"{failed.group(1)} answers from {url} were not 2xx/3xx")
    found = _REQUESTS_PER_SECOND.search(result.stdout)
    if found is None:
        raise RuntimeError(f"no requests/sec in wrk's output: {result.stdout!r}")
    return float(found.group(1))


def bench_http(out: Output, *, wrk: str | None, seconds: int) -> None:
    if wrk is None:
        emit(out, figure="http", skipped="wrk is not installed (apt-get install wrk); no endpoint figures")
        return
    now = utcnow()
    ca = services.create_ca(name="Bench HTTP CA", slug="bench-http", make_default=False)
    _fill_revocations(ca, User.objects.create_user("bench-http-owner"), HTTP_CRL_ENTRIES, now)
    publication = services.publish_crl(ca=ca)
    crl_path = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    connection.close()  # the server's workers use the database from here
    with gunicorn() as port:
        response, body = _get(port, crl_path)
        if response.status != 200 or body != bytes(publication.der):
            raise RuntimeError(f"the server did not serve the CRL ({response.status})")
        etag = str(response.headers["ETag"])
        base = f"http://127.0.0.1:{port}"
        runs: dict[str, tuple[str, dict[str, str]]] = {
            "trivial": (f"{base}/bench/trivial", {}),
            "crl": (f"{base}{crl_path}", {}),
            "not_modified": (f"{base}{crl_path}", {"If-None-Match": etag}),
            "trivial_304": (f"{base}/bench/trivial-304", {}),
        }
        for url, headers in runs.values():  # warm-up: every worker has read the CRL
            wrk_rate(wrk, url, seconds=1, headers=headers)
        # Interleaved rounds, best of each: the machine's other load varies over a run.
        best = dict.fromkeys(runs, 0.0)
        for _round in range(HTTP_ROUNDS):
            for name, (url, headers) in runs.items():
                best[name] = max(best[name], wrk_rate(wrk, url, seconds=seconds, headers=headers))
        trivial, crl, not_modified = best["trivial"], best["crl"], best["not_modified"]
    in_process = wsgi_microseconds(crl_path=crl_path, etag=etag)
    common = {
        "database": connection.vendor,
        "server": "gunicorn, 2 gthread workers of 4 threads",
        "client": f"wrk -t2 -c8, best of {HTTP_ROUNDS} interleaved {seconds}-second runs",
    }
    emit(out, figure="http_trivial_view", requests_per_second=trivial, **common)
    emit(
        out,
        figure="http_crl_200",
        entries=HTTP_CRL_ENTRIES,
        requests_per_second=crl,
        share_of_trivial=round(crl / trivial, 3),
        **at_least(crl / trivial, HTTP_CRL_SHARE, "x trivial view"),
        **common,
    )
    emit(
        out,
        figure="http_crl_304",
        entries=HTTP_CRL_ENTRIES,
        requests_per_second=not_modified,
        share_of_trivial=round(not_modified / trivial, 3),
        **at_least(not_modified / trivial, HTTP_304_SHARE, "x trivial view"),
        trivial_304_view_requests_per_second=best["trivial_304"],
        share_of_trivial_304_view=round(not_modified / best["trivial_304"], 3),
        **common,
    )
    emit(
        out,
        figure="wsgi_in_process_microseconds_per_request",
        note="the same three requests through Django's WSGI handler in this process: no network, no server",
        database=connection.vendor,
        **in_process,
    )


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None, /
) -> Callable[[bytes], object]:
    return len


def wsgi_microseconds(*, crl_path: str, etag: str, count: int = 500) -> dict[str, float]:
    """Microseconds per request through the WSGI handler (the benchmark URLconf), best of 3 rounds."""
    handler = WSGIHandler()

    def call(path: str, headers: dict[str, str]) -> None:
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
            "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", **headers,
        }  # fmt: skip
        response = handler(environ, _start_response)
        b"".join(response)
        response.close()

    requests = {
        "trivial": ("/bench/trivial", {}),
        "crl_200": (crl_path, {}),
        "crl_304": (crl_path, {"HTTP_IF_NONE_MATCH": etag}),
    }
    best = dict.fromkeys(requests, float("inf"))
    with override_settings(ROOT_URLCONF="enroll.bench_urls", ALLOWED_HOSTS=["127.0.0.1"]):
        for _round in range(3):
            for name, (path, headers) in requests.items():
                call(path, headers)
                started = time.perf_counter()
                for _ in range(count):
                    call(path, headers)
                best[name] = min(best[name], (time.perf_counter() - started) / count * 1e6)
    return {name: round(value, 1) for name, value in best.items()}


def run(
    *,
    out: Output = sys.stdout,
    crl_sizes: list[int],
    issue_count: int,
    single_count: int = 200,
    wrk: str | None = None,
    http_seconds: int = 5,
) -> None:
    with throwaway_database():
        if issue_count or single_count:
            bench_issuance(out, issue_count, single_count)
        if crl_sizes:
            bench_crl(out, crl_sizes)
        if http_seconds:
            bench_http(out, wrk=wrk, seconds=http_seconds)
