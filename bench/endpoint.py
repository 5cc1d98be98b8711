"""The CRL endpoint under gunicorn and wrk, against a trivial view behind the same middleware
(:mod:`bench.urls`), and the same requests through Django's WSGI handler in this process."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.client import HTTPConnection, HTTPResponse

from django.conf import settings
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from bench.common import Output, at_least, emit, fill_revocations
from ca.clock import utcnow
from ca.services import authorities
from ca.services import crl as ca_crl

#: The CRL endpoint (200) against a trivial view through the same middleware; a 304 at least as fast.
HTTP_CRL_SHARE = 0.9
HTTP_304_SHARE = 1.0
HTTP_CRL_ENTRIES = 1000
HTTP_ROUNDS = 3


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


def read_bytes(path: str) -> bytes:
    """The file's bytes; empty when it cannot be read (a process of ``/proc`` that ended)."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [int(child) for task in tasks for child in read_bytes(f"/proc/{pid}/task/{task}/children").split()]


@contextmanager
def gunicorn(
    *, workers: int = 2, threads: int | None = 4, extra_env: dict[str, str] | None = None
) -> Iterator[int]:
    """gunicorn (threaded workers, as the load test runs it; ``threads`` None: its default sync workers, one
    request at a time each) with :mod:`bench.settings` on a free loopback port, ``extra_env`` added to its
    environment; yields the port once every worker is there. ``--preload``, as docs/OPERATIONS.md advises:
    the master loads the portal (and what ``enroll/wsgi.py`` prepares) before it forks warm workers."""
    port = _free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "ENROLL_BENCH_BASE_SETTINGS": str(settings.SETTINGS_MODULE),
        "ENROLL_BENCH_DATABASE_NAME": str(connection.settings_dict["NAME"]),
    }
    worker_class = ["--worker-class", "sync"] if threads is None else [
        "--worker-class", "gthread", "--threads", str(threads)
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "gunicorn", "--workers", str(workers), *worker_class,
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--preload", "enroll.wsgi:application",
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
        while len(children_of(server.pid)) < workers:  # all forked (warm: --preload), not only the first
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn started {len(children_of(server.pid))} of {workers} workers")
            time.sleep(0.05)
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


def wrk_rate(
    wrk: str, url: str, *, seconds: int, headers: dict[str, str] | None = None, extra: Sequence[str] = ()
) -> float:
    """Requests per second wrk gets from ``url`` (2 threads, 8 connections); ``extra``: more options
    (e.g. ``-s script.lua``)."""
    options = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        [wrk, "-t2", "-c8", f"-d{seconds}s", *options, *extra, url],
        check=True,
        capture_output=True,
        text=True,
    )
    if failed := _NON_2XX.search(result.stdout):
        raise RuntimeError(f"{failed.group(1)} answers from {url} were not 2xx/3xx")
    found = _REQUESTS_PER_SECOND.search(result.stdout)
    if found is None:
        raise RuntimeError(f"no requests/sec in wrk's output: {result.stdout!r}")
    return float(found.group(1))


def bench_http(out: Output, *, wrk: str | None, seconds: int) -> float | None:
    """The endpoint figures; returns the 304s per second under gunicorn (None without wrk)."""
    if wrk is None:
        emit(out, figure="http", skipped="wrk is not installed (apt-get install wrk); no endpoint figures")
        return None
    now = utcnow()
    ca = authorities.create_ca(name="Bench HTTP CA", slug="bench-http", make_default=False)
    fill_revocations(ca, User.objects.create_user("bench-http-owner"), HTTP_CRL_ENTRIES, now)
    publication = ca_crl.publish_crl(ca=ca)
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
    return not_modified


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
    with override_settings(ROOT_URLCONF="bench.urls", ALLOWED_HOSTS=["127.0.0.1"]):
        for _round in range(3):
            for name, (path, headers) in requests.items():
                call(path, headers)
                started = time.perf_counter()
                for _ in range(count):
                    call(path, headers)
                best[name] = min(best[name], (time.perf_counter() - started) / count * 1e6)
    return {name: round(value, 1) for name, value in best.items()}
