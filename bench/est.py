"""EST enrollments per second with a pre-approved enrollment code, under gunicorn, linted (docs/DEVICES.md).

gunicorn (:data:`WORKERS` sync workers, one request at a time each, as docs/OPERATIONS.md advises for 2
cores; :func:`bench.endpoint.gunicorn`) serves the portal; 8 client threads POST RFC 7030 ``simpleenroll``
requests (a fresh P-256 key each, made before the clock starts) with one multi-use pre-approved code, as the
generated device server's nginx passes them on: a connection of its own for each request (``proxy_pass``
without upstream keep-alive) and ``X-Forwarded-Proto: https`` from a trusted proxy, 127.0.0.1. (Kept-alive
client connections stay with the worker that accepted them, so a few connections can load one worker and
leave the other idle: not what the front server does.) Every answer must be 200 with one certificate in a
certs-only PKCS#7. Everything the portal does stays on: pre-signing lint, the wrong-code lock-out check
(rate limits on: a right code is never counted, so 127.0.0.1 is never locked out), the four audit entries,
and the owner's mail, queued for the worker as in production (the database task backend; the worker does
not run during the figure). The server's own CPU time per enrollment is given beside the rate: on a
machine shared with other work, 2 cores divided by it is what the server could do on 2 idle cores.

Beside it: the same enrollments through Django's WSGI handler in this process (no network, no server),
with the SQL statements of one enrollment and where their time goes (cProfile; :data:`PARTS`), and the
single approvals per second of :mod:`bench.issuance` for comparison. A CA is made if the run has none yet
(``--issue 0 --single 0``).
"""

from __future__ import annotations

import base64
import cProfile
import io
import os
import pstats
import queue
import threading
import time
from collections.abc import Callable
from http.client import HTTPConnection

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from django.conf import settings
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from accounts.services import mark_email_verified
from bench.common import Output, at_least, emit
from bench.endpoint import children_of, gunicorn, read_bytes
from ca.models import CertificateAuthority
from ca.services import authorities
from enroll import flows

#: The issue's target: EST enrollments per second with a pre-approved code, on 2 cores.
EST_TARGET_PER_SECOND = 50.0
#: The target is judged from this many enrollments on (a handful says nothing about a rate).
EST_TARGET_MIN_COUNT = 100
EST_PATH = "/.well-known/est/simpleenroll"
CLIENT_THREADS = 8
#: gunicorn's workers: two processes per core, each a sync worker (one request at a time: a second thread
#: in a worker mostly waits for the first's GIL, 10 to 15 % more CPU per enrollment); docs/OPERATIONS.md.
WORKERS = 4
#: The owner's mail is queued for the worker, as in production (tests.settings runs tasks inline).
QUEUED_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
#: Where an enrollment's time goes: each part's functions (file, name) in the profile, whose cumulative
#: times are added up (the parts nest: the flow holds all but "http_and_view").
PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "flow": (("enroll/flows/devices.py", "enroll_with_code"),),
    "csr_checks": (("ca/pki/csr.py", "check_csr_der"),),
    "store_request": (("enroll/flows/submission.py", "_store"),),
    "sign": (  # drafting and the CA key's signature (one function before the throwaway-key draft)
        ("ca/services/issuance.py", "_sign_all"),
        ("ca/services/issuance.py", "_draft_all"),
        ("ca/services/issuance.py", "_sign_drafts"),
    ),
    "lint": (("ca/services/issuance.py", "_lint_drafts"),),
    "audit": (("ca/audit.py", "_append"),),
    "owner_mail": (  # queued for the worker after commit (or written at once where tasks run inline)
        ("accounts/emails.py", "enqueue"),
        ("enroll/notifications.py", "notify_decision"),
    ),
    "code_use_and_lockout": (
        ("enroll/flows/devices.py", "use_code"),
        ("enroll/flows/devices.py", "_locked_out"),
    ),
}


def _csr_body(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A PKCS#10 request as RFC 7030 sends it: base64 of the DER (``openssl req -outform DER | base64``)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def _headers(code: str, body: bytes) -> dict[str, str]:
    basic = base64.b64encode(f"bench-device:{code}".encode()).decode()
    return {
        "Authorization": f"Basic {basic}",
        "Content-Type": "application/pkcs10",
        "Content-Transfer-Encoding": "base64",
        "Content-Length": str(len(body)),
        "X-Forwarded-Proto": "https",  # the front server terminated TLS (trusted proxy 127.0.0.1)
    }


def _one_certificate(status: int, body: bytes) -> None:
    """The answer is 200 with exactly one certificate in a base64 certs-only PKCS#7, else RuntimeError."""
    if status != 200:
        raise RuntimeError(f"EST simpleenroll answered {status}: {body[:300]!r}")
    certificates = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
    if len(certificates) != 1:
        raise RuntimeError(f"EST simpleenroll sent {len(certificates)} certificates, not 1")


def _client(port: int, code: str, bodies: queue.Queue[bytes], errors: list[str]) -> None:
    """Send the bodies as the generated device server's nginx passes requests on: a connection of its own
    for each (``proxy_pass`` without upstream keep-alive), so gunicorn's workers share them as they come."""
    while True:
        try:
            body = bodies.get_nowait()
        except queue.Empty:
            return
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", EST_PATH, body=body, headers={**_headers(code, body), "Connection": "close"})
            response = conn.getresponse()
            _one_certificate(response.status, response.read())
        except Exception as exc:  # reported; the figure is refused below
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (Linux ``/proc/stat``; (0, 0) elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _server_cpu_ticks() -> dict[int, int]:
    """CPU ticks (user + system) used so far by each process of the gunicorn this process started: its
    master and workers (Linux ``/proc``; empty elsewhere), not the other children (lint's worker pool)."""
    ticks: dict[int, int] = {}
    pending = [pid for pid in children_of(os.getpid()) if b"gunicorn" in read_bytes(f"/proc/{pid}/cmdline")]
    while pending:
        pid = pending.pop()
        fields = read_bytes(f"/proc/{pid}/stat").rpartition(b")")[2].split()
        if len(fields) > 12:
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
            pending.extend(children_of(pid))
    return ticks


def _server_cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """The CPU time the server's processes used between two :func:`_server_cpu_ticks`."""
    hertz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / hertz


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None, /
) -> Callable[[bytes], object]:
    _start_response.status = int(status.split()[0])  # type: ignore[attr-defined]
    return len


def _in_process(code: str, bodies: list[bytes]) -> tuple[float, int, dict[str, float]]:
    """Microseconds per enrollment through the WSGI handler in this process (the first half, unprofiled),
    the SQL statements of one enrollment, and where the time of the second half went (:func:`shares`)."""
    handler = WSGIHandler()

    def enroll(body: bytes) -> None:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": EST_PATH, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "443", "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "https", "CONTENT_TYPE": "application/pkcs10",
            "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
            "HTTP_AUTHORIZATION": _headers(code, body)["Authorization"],
            "HTTP_CONTENT_TRANSFER_ENCODING": "base64",
        }  # fmt: skip
        response = handler(environ, _start_response)
        content = b"".join(response)
        response.close()
        _one_certificate(_start_response.status, content)  # type: ignore[attr-defined]

    rest = bodies[2:]
    timed, profiled = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    profiler = cProfile.Profile()
    with override_settings(ALLOWED_HOSTS=["127.0.0.1"], RATELIMIT_ENABLE=True, TASKS=QUEUED_TASKS):
        enroll(bodies[0])  # warm-up: imports, caches, the CA key opened
        connection.queries_log.clear()  # a full log (9,000 entries) would capture nothing
        with CaptureQueriesContext(connection) as queries:
            enroll(bodies[1])
        statements = len(queries.captured_queries)  # read now: the next request empties the log
        started = time.perf_counter()
        for body in timed:
            enroll(body)
        seconds = time.perf_counter() - started
        profiler.enable()
        for body in profiled:
            enroll(body)
        profiler.disable()
    stats = pstats.Stats(profiler)
    return (seconds / len(timed)) * 1e6, statements, shares(stats)


#: Django's calls into the database driver (any backend): queries, then commits.
DATABASE = (
    ("django/db/backends/utils.py", "_execute"),
    ("django/db/backends/utils.py", "_executemany"),
    ("django/db/backends/base/base.py", "_commit"),
)


def shares(stats: pstats.Stats) -> dict[str, float]:
    """Each of :data:`PARTS`' share of the whole request's time, and the database's (:data:`DATABASE`: the
    queries and commits as Django hands them to the driver, waiting for the server included); the rest is
    the HTTP handling, the view and Django's ORM building queries and rows."""
    rows = stats.stats  # type: ignore[attr-defined]
    total = max(cumulative for (_calls, _primitive, _own, cumulative, _callers) in rows.values())
    found = {part: 0.0 for part in PARTS}
    database = 0.0
    for (path, _line, name), (_calls, _primitive, _own, cumulative, _callers) in rows.items():
        for part, functions in PARTS.items():
            if any(path.endswith(file) and name == function for file, function in functions):
                found[part] += cumulative
        if any(path.endswith(file) and name == function for file, function in DATABASE):
            database += cumulative
    return {
        **{part: round(seconds / total, 3) for part, seconds in found.items()},
        "database": round(database / total, 3),
    }


def bench_est(out: Output, count: int, *, single_rate: float | None) -> None:
    """The EST figures: ``count`` enrollments under gunicorn; then ``count // 4`` timed in process and as
    many profiled."""
    if not CertificateAuthority.objects.filter(is_default=True).exists():
        authorities.create_ca(name="Bench EST CA", slug="bench-est", make_default=True)
    owner = User.objects.create_user("bench-device-owner", "device-owner@example.com")
    mark_email_verified(owner)  # certificates carry the address: only verified accounts enroll
    approver = User.objects.create_superuser("bench-est-approver", "est-approver@example.com", "not-used")
    in_process_count = max(4, count // 2)
    row, code = flows.create_enrollment_code(
        owner=owner,
        created_by=approver,
        device_name="bench-device",
        pre_approve=True,
        uses=count + in_process_count,
        hours=1,
    )
    if not row.pre_approved:
        raise RuntimeError("the benchmark's enrollment code is not pre-approved")
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count + in_process_count)]
    bodies = [_csr_body(key, f"bench-device-{n}") for n, key in enumerate(keys)]
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies[:count]:
        work.put(body)
    errors: list[str] = []
    connection.close()  # the server's workers use the database from here
    server_env = {"ENROLL_TRUSTED_PROXIES": "127.0.0.1", "ENROLL_BENCH_QUEUED_TASKS": "1"}
    with gunicorn(workers=WORKERS, threads=None, extra_env=server_env) as port:
        threads = [
            threading.Thread(target=_client, args=(port, code, work, errors)) for _ in range(CLIENT_THREADS)
        ]
        busy_before, total_before = _cpu_ticks()
        server_before, client_before = _server_cpu_ticks(), time.process_time()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        server_cpu = _server_cpu_seconds(server_before, _server_cpu_ticks())
        client_cpu = time.process_time() - client_before
        busy_after, total_after = _cpu_ticks()
    cpu_busy = (busy_after - busy_before) / max(1, total_after - total_before)
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} EST enrollments failed, e.g. {errors[0]}")
    rate = count / seconds
    microseconds, statements, parts = _in_process(code, bodies[count:])
    emit(
        out,
        figure="est_enrollments_pre_approved",
        database=connection.vendor,
        ca_key="ec-p256",
        lint=bool(settings.ENROLL_LINT_BEFORE_SIGN),
        server=f"gunicorn, {WORKERS} sync workers",
        client=f"{CLIENT_THREADS} threads, a connection per request, POST {EST_PATH}",
        enrollments=count,
        seconds=round(seconds, 3),
        per_second=round(rate, 1),
        single_approvals_per_second=round(single_rate, 1) if single_rate else None,
        cpu_busy=round(cpu_busy, 2),  # of all cores, everything on the machine, during the run
        cores=os.cpu_count(),
        # CPU time per enrollment of the gunicorn processes and of the client threads; a database server's
        # (PostgreSQL) is not in it. 2 cores divided by the two together: the rate on 2 idle cores.
        server_cpu_ms=round(server_cpu / count * 1000, 1),
        client_cpu_ms=round(client_cpu / count * 1000, 1),
        **(at_least(rate, EST_TARGET_PER_SECOND, "/s (2 cores)") if count >= EST_TARGET_MIN_COUNT else {}),
    )
    emit(
        out,
        figure="est_in_process",
        note="the same kind of enrollments through Django's WSGI handler in this process (no network, "
        "no server), and each part's share of their time (cProfile; the parts nest inside the flow)",
        database=connection.vendor,
        enrollments=(in_process_count - 2) // 2,
        sql_statements_per_enrollment=statements,  # BEGIN, COMMIT and savepoints included
        microseconds_per_enrollment=round(microseconds, 1),
        per_second=round(1e6 / microseconds, 1),
        share_of_time=parts,
    )
