"""The EST figure of the benchmark on its own (``--issue 0 --single 0``: no CA made before it, so it makes
its own): enrollments under gunicorn with rate limits on and the owner's mail queued, the server's CPU time
per enrollment, and the statements of one enrollment in process (no timing is judged)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.test_benchmark import figures, run_benchmark


@pytest.mark.real_server  # gunicorn serves the enrollments: once, in the PostgreSQL pass
def test_the_est_figure_runs_alone_with_its_own_ca(tmp_path: Path) -> None:
    result = run_benchmark(
        tmp_path,
        *("--crl-sizes", "", "--issue", "0", "--single", "0", "--est", "3"),
        *(
            "--http-seconds",
            "0",
            "--reach-runs",
            "0",
            "--ocsp-certificates",
            "0",
            "--no-hsm",
            "--signer",
            "0",
        ),
    )

    assert result.returncode == 0, result.stderr
    by_name = {figure["figure"]: figure for figure in figures(result.stdout)}
    est = by_name["est_enrollments_pre_approved"]
    assert (est["enrollments"], est["lint"], est["single_approvals_per_second"]) == (3, True, None)
    assert est["per_second"] > 0
    assert est["server_cpu_ms"] > 0  # the gunicorn processes were found and measured
    in_process = by_name["est_in_process"]
    assert 10 < in_process["sql_statements_per_enrollment"] < 40
    assert 0 < in_process["share_of_time"]["lint"] < in_process["share_of_time"]["flow"] <= 1
