"""The benchmark (``python -m bench``, top-level ``bench/``), with tiny sizes: every figure comes out as one
line of JSON (no timing is judged); and it stays out of the installed portal."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.harness.programs import missing_real_client
from tests.harness.softhsm import need_softhsm

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench`` with ``args``; without the signer's and SoftHSM2's figures unless ``--signer`` or
    ``--hsm`` is given (each runs a bulk approval and a 100k-entry CRL: tests that judge other figures
    would spend a minute on them)."""
    if "--signer" not in args:
        args = (*args, "--signer", "0")
    if "--hsm" not in args and "--no-hsm" not in args:
        args = (*args, "--no-hsm")
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}  # its own SQLite file
    env["ENROLL_DATA_DIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "bench", "--settings", "tests.settings", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def figures(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.real_server  # the EST figure runs gunicorn: once, in the PostgreSQL pass
def test_it_prints_every_figure_as_a_json_line(tmp_path: Path) -> None:
    result = run_benchmark(
        tmp_path,
        "--crl-sizes",
        "20",
        "--issue",
        "3",
        "--single",
        "2",
        "--est",
        "3",
        "--wrk",
        "/nonexistent/wrk",
        "--reach-runs",
        "0",
        "--no-hsm",
        *("--signer", "3", "--signer-crl-entries", "20"),
    )

    assert result.returncode == 0, result.stderr
    found = figures(result.stdout)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for figure in found:
        by_name.setdefault(figure["figure"], []).append(figure)
    assert [f["lint"] for f in by_name["issue_bulk_approval"]] == [True, False]
    assert all(f["issued"] == f["requests"] == 3 for f in by_name["issue_bulk_approval"])
    assert by_name["issue_single_approvals"][0]["requests"] == 2
    (queue,) = by_name["issue_approve_and_next"]
    assert queue["issued"] == queue["requests"] > 0
    assert queue["per_second"] > 0
    assert by_name["issue_raw_cryptography"][0]["per_second"] > 0
    (est,) = by_name["est_enrollments_pre_approved"]  # under gunicorn, beside the single approvals
    assert est["enrollments"] == 3
    assert est["lint"] is True
    assert est["per_second"] > 0
    assert est["single_approvals_per_second"] == by_name["issue_single_approvals"][0]["per_second"]
    (est_in_process,) = by_name["est_in_process"]
    assert est_in_process["microseconds_per_enrollment"] > 0
    assert 0 < est_in_process["share_of_time"]["lint"] < est_in_process["share_of_time"]["flow"] <= 1
    assert by_name["crl_publish_full_build"][0]["entries"] == 20
    assert by_name["crl_republish"][0]["entries"] == 21
    assert by_name["crl_republish"][0]["raw_seconds"] > 0
    assert "crl_build_raw_cryptography" in by_name
    assert "crl_carry_over_raw_cryptography" in by_name
    served = by_name["revocation_to_served"][0]
    assert served["listed"] is True
    assert served["served_status"] == 200
    assert "wrk is not installed" in by_name["http"][0]["skipped"]
    assert "wrk is not installed" in by_name["ocsp"][0]["skipped"]
    polling = by_name["polling_cost_in_process"][0]
    assert polling["microseconds_per_304"] > 0
    assert polling["microseconds_per_report"] > 0
    assert polling["nodes_per_core"] > 0
    assert "skipped" in by_name["polling_cost_gunicorn"][0]
    assert "revocation_reach" not in by_name  # --reach-runs 0
    assert not [name for name in by_name if name.startswith("hsm")]  # --no-hsm
    signer = by_name["signer_bulk_approval"]  # in process and through a real manage.py signer
    assert [f["lint"] for f in signer] == [True, False]
    assert all(f["signer_per_second"] > 0 < f["in_process_per_second"] for f in signer)
    assert by_name["signer_crl_republish"][0]["entries"] == 20
    assert by_name["signer_round_trip"][0]["kept_connection_ms"] > 0
    assert all("target" not in f for f in found), "no target applies at these sizes"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crl-sizes", "1k"], "--crl-sizes takes whole numbers"),
        (["--crl-sizes", "0"], "must be positive"),
        (["--issue", "-1"], "must be positive"),
        (["--est", "-1"], "must be positive"),
        (["--reach-runs", "-1"], "must be positive"),
        (["--ocsp-certificates", "-1"], "must be positive"),
        (["--reach-servers", "nginx,lighttpd"], "not lighttpd"),
        (["--hsm-issue", "0"], "must be positive"),
        (["--hsm-crl-entries", "-5"], "must be positive"),
    ],
)
def test_bad_sizes_are_refused_in_plain_words(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_benchmark(tmp_path, *args)

    assert result.returncode != 0
    assert message in result.stderr


def test_single_approvals_alone_have_no_raw_signing_figure_to_compare_with(tmp_path: Path) -> None:
    # --issue 0 signs nothing raw: the single approvals' line says so instead of dividing by zero.
    result = run_benchmark(
        tmp_path,
        *("--crl-sizes", "", "--issue", "0", "--single", "2", "--est", "0", "--http-seconds", "0"),
        *("--reach-runs", "0"),
    )

    assert result.returncode == 0, result.stderr
    found = {figure["figure"]: figure for figure in figures(result.stdout)}
    assert "issue_raw_cryptography" not in found
    single = found["issue_single_approvals"]
    assert (single["requests"], single["raw_per_second"], single["share_of_raw"]) == (2, None, None)
    assert single["per_second"] > 0


@pytest.mark.real_client
@pytest.mark.real_server
def test_it_prints_the_revocation_reach_of_a_front_server(tmp_path: Path) -> None:
    """One revocation at node (the quickest server to start) with the sync service: the figure and its
    target; the timing itself is judged by tests/realclients/test_revocation_reach.py."""
    result = run_benchmark(
        tmp_path,
        *("--crl-sizes", "", "--issue", "0", "--single", "0", "--est", "0", "--http-seconds", "0"),
        *("--reach-runs", "1", "--reach-servers", "node"),
    )

    assert result.returncode == 0, result.stderr
    (reach,) = [f for f in figures(result.stdout) if f["figure"] == "revocation_reach"]
    if "skipped" in reach:  # the benchmark found no node
        missing_real_client(reach["skipped"])
    assert reach["server"] == "node"
    assert reach["runs"] == 1
    assert reach["max_seconds"] == reach["median_seconds"] > 0
    assert reach["target"] == "<= 5 s (median)"


@pytest.mark.real_client
def test_it_prints_the_softhsm2_figures_beside_the_key_files(tmp_path: Path) -> None:
    """The same CA's signatures, bulk approvals and CRL republish with its key file, then moved into a
    SoftHSM2 token, and how the two compare."""
    need_softhsm()
    result = run_benchmark(
        tmp_path,
        *("--crl-sizes", "", "--issue", "0", "--single", "0", "--est", "0", "--http-seconds", "0"),
        *("--reach-runs", "0", "--hsm", "--hsm-issue", "3", "--hsm-crl-entries", "20"),
    )

    assert result.returncode == 0, result.stderr
    found = figures(result.stdout)
    for name in ("hsm_sign", "hsm_issue_bulk_approval", "hsm_crl_republish"):
        lines = [f for f in found if f["figure"] == name]
        assert [f["key_store"] for f in lines] == ["file", "softhsm2"], lines
    bulk = [f for f in found if f["figure"] == "hsm_issue_bulk_approval"]
    assert all(f["issued"] == f["requests"] == 3 and f["per_second"] > 0 for f in bulk)
    assert [f["entries"] for f in found if f["figure"] == "hsm_crl_republish"] == [21, 22]
    (beside,) = [f for f in found if f["figure"] == "hsm_beside_file"]
    assert beside["sign_share_of_file"] > 0
    assert beside["republish_seconds_softhsm2"] > 0


def test_the_installed_portal_carries_no_benchmark() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    patterns: list[str] = find["include"]

    assert not [
        (name, pattern)
        for name in ("bench", "bench.run", "tests")
        for pattern in patterns
        if fnmatch.fnmatchcase(name, pattern)
    ]
    packaged = [top for pattern in patterns for top in ROOT.glob(pattern) if (top / "__init__.py").exists()]
    assert {top.name for top in packaged} == {"enroll", "accounts", "ca"}
    assert [path for top in packaged for path in top.rglob("*bench*.py")] == []
