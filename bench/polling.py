"""What front servers polling every 2 s cost the portal (issue 18): per node, one conditional GET (a 304)
per CA of the chain per poll, and a signed report at least every heartbeat (10 polls), more after a
change. From the 304s per second under gunicorn (:func:`bench.endpoint.bench_http`) and what a report
costs beside a 304 (both through Django's WSGI handler in this process), how many nodes one core serves.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable

from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from django.urls import reverse

from bench.common import Output, emit
from ca.models import CertificateAuthority
from ca.pki import node_reports
from ca.pki.node_reports import InstalledCrl, Report, ReportOutcome
from ca.services import authorities, frontservers
from ca.services import crl as ca_crl

EVERY = 2.0
HEARTBEAT = 10 * EVERY
CHAIN = 2  # CAs of the chain: one conditional GET each per poll
REPORTS = 300


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None, /
) -> Callable[[bytes], object]:
    if not status.startswith(("200", "304")):
        raise RuntimeError(f"the benchmark request was answered {status}")
    return len


def _call(handler: WSGIHandler, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
        "CONTENT_LENGTH": str(len(body)), **headers,
    }  # fmt: skip
    response = handler(environ, _start_response)
    b"".join(response)
    response.close()


def report_and_304_microseconds(count: int = REPORTS) -> tuple[float, float]:
    """Microseconds per signed heartbeat report (``POST /pki/report``, each with its own nonce) and per
    conditional GET answered 304, through the WSGI handler in this process (one core, no network)."""
    root = authorities.create_ca(name="Bench Polling Root", slug="bench-polling-root", make_default=False)
    issuing = authorities.create_ca(name="Bench Polling CA", slug="bench-polling", parent=root)
    chain: list[CertificateAuthority] = [root, issuing]
    _server, token = frontservers.register(name="bench-poller", cas=chain, actor="bench")
    key = node_reports.key_from_token(token)
    numbers = {ca.pk: ca_crl.current_crl(ca=ca).number for ca in chain}
    crls = tuple(InstalledCrl(frontservers.authority_key_id(ca), numbers[ca.pk]) for ca in chain)
    signed = [
        node_reports.sign_report(
            report=Report(
                node="bench-poller", timestamp=int(time.time()), nonce=node_reports.new_nonce(),
                interval=EVERY, heartbeat=HEARTBEAT, outcome=ReportOutcome.UNCHANGED, error="", crls=crls,
            ),
            key=key,
        )
        for _ in range(count + 10)
    ]  # fmt: skip
    signature_header = "HTTP_" + node_reports.SIGNATURE_HEADER.upper().replace("-", "_")
    report_headers = {"CONTENT_TYPE": node_reports.CONTENT_TYPE}
    crl_path = reverse("ca:crl-der", kwargs={"slug": issuing.slug})
    handler = WSGIHandler()
    with override_settings(ROOT_URLCONF="bench.urls", ALLOWED_HOSTS=["127.0.0.1"]):
        etag = _etag(handler, crl_path)
        report_path = reverse("ca:report")
        for body, signature in signed[:10]:  # warm-up
            _call(handler, "POST", report_path, body, {**report_headers, signature_header: signature})
        started = time.perf_counter()
        for body, signature in signed[10:]:
            _call(handler, "POST", report_path, body, {**report_headers, signature_header: signature})
        report = (time.perf_counter() - started) / count * 1e6
        best_304 = float("inf")
        for _round in range(3):
            started = time.perf_counter()
            for _ in range(count):
                _call(handler, "GET", crl_path, b"", {"HTTP_IF_NONE_MATCH": etag})
            best_304 = min(best_304, (time.perf_counter() - started) / count * 1e6)
    return report, best_304


def _etag(handler: WSGIHandler, path: str) -> str:
    found: list[str] = []

    def start(
        status: str, headers: list[tuple[str, str]], exc_info: object = None, /
    ) -> Callable[[bytes], object]:
        found.extend(value for name, value in headers if name.lower() == "etag")
        return len

    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
    }  # fmt: skip
    response = handler(environ, start)
    b"".join(response)
    response.close()
    if not found:
        raise RuntimeError(f"{path} gave no ETag")
    return found[0]


def nodes_per_core(*, per_304: float, per_report: float) -> float:
    """Nodes one core serves when a 304 costs ``per_304`` and a report ``per_report`` (same unit)."""
    per_node_per_second = CHAIN / EVERY * per_304 + per_report / HEARTBEAT
    return 1.0 / per_node_per_second


def bench_polling(out: Output, *, gunicorn_304_per_second: float | None) -> None:
    report_us, not_modified_us = report_and_304_microseconds()
    seconds_304, seconds_report = not_modified_us / 1e6, report_us / 1e6
    cores = os.cpu_count() or 1
    common = {
        "every_seconds": EVERY,
        "heartbeat_seconds": HEARTBEAT,
        "cas_per_poll": CHAIN,
        "per_node": f"{CHAIN} conditional GETs per {EVERY:g} s + 1 signed report per {HEARTBEAT:g} s",
    }
    emit(
        out,
        figure="polling_cost_in_process",
        microseconds_per_304=round(not_modified_us, 1),
        microseconds_per_report=round(report_us, 1),
        nodes_per_core=int(nodes_per_core(per_304=seconds_304, per_report=seconds_report)),
        note="Django's WSGI handler in this process: one core, no network, no server",
        **common,
    )
    if gunicorn_304_per_second is None:
        emit(
            out,
            figure="polling_cost_gunicorn",
            skipped="no gunicorn 304 figure (wrk missing or --http-seconds 0)",
        )
        return
    per_core = gunicorn_304_per_second / cores
    seconds_304_gunicorn = 1.0 / per_core
    # A report is a 304's round trip plus what it costs beyond one, as measured in process.
    seconds_report_gunicorn = seconds_304_gunicorn + max(0.0, seconds_report - seconds_304)
    emit(
        out,
        figure="polling_cost_gunicorn",
        gunicorn_304_per_second=gunicorn_304_per_second,
        cores=cores,
        per_core_304_per_second=round(per_core, 1),
        nodes_per_core=int(nodes_per_core(per_304=seconds_304_gunicorn, per_report=seconds_report_gunicorn)),
        note=(
            "304s per second under gunicorn divided by the cores (wrk shares them, so this is low); a report "
            "costs a 304 plus its extra work measured in process"
        ),
        **common,
    )
