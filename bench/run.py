"""The benchmark's parts in order, in one throwaway database (Django must be set up before import)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench.common import Output, throwaway_database
from bench.crl import bench_crl
from bench.endpoint import bench_http
from bench.est import bench_est
from bench.hsm import bench_hsm
from bench.issuance import bench_issuance
from bench.ocsp import OCSP_CERTIFICATES, bench_ocsp
from bench.polling import bench_polling
from bench.reach import bench_reach
from bench.signer import bench_signer


def run(
    *,
    out: Output = sys.stdout,
    crl_sizes: list[int],
    issue_count: int,
    single_count: int = 200,
    wrk: str | None = None,
    http_seconds: int = 5,
    reach_runs: int = 5,
    reach_servers: Sequence[str] = ("nginx", "apache", "node"),
    ocsp_certificates: int = OCSP_CERTIFICATES,
    est_count: int = 200,
    signer_issue: int = 1000,
    signer_crl_entries: int = 100_000,
    hsm: bool = False,
    hsm_issue: int = 200,
    hsm_crl_entries: int = 100_000,
) -> None:
    with throwaway_database():
        single_rate = bench_issuance(out, issue_count, single_count) if issue_count or single_count else None
        if est_count:
            bench_est(out, est_count, single_rate=single_rate)
        if crl_sizes:
            bench_crl(out, crl_sizes)
        not_modified = bench_http(out, wrk=wrk, seconds=http_seconds) if http_seconds else None
        bench_polling(out, gunicorn_304_per_second=not_modified)
        if http_seconds and ocsp_certificates:
            bench_ocsp(out, wrk=wrk, seconds=http_seconds, count=ocsp_certificates)
        if reach_runs and reach_servers:
            bench_reach(out, runs=reach_runs, servers=list(reach_servers))
        if signer_issue:
            bench_signer(out, signer_issue, signer_crl_entries)
        if hsm:  # last: its CA becomes the default issuer
            bench_hsm(out, issue_count=hsm_issue, crl_entries=hsm_crl_entries)
