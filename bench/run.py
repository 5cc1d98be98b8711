"""The benchmark's parts in order, in one throwaway database (Django must be set up before import)."""

from __future__ import annotations

import sys

from bench.common import Output, throwaway_database
from bench.crl import bench_crl
from bench.endpoint import bench_http
from bench.issuance import bench_issuance


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
