"""``python -m bench [--settings tests.settings] [options]``: print the benchmark figures as JSON lines.

CRL publication at several sizes (time, peak memory), revocation to served CRL, bulk and single approvals,
EST enrollments with a pre-approved code under gunicorn, the CRL endpoint and the OCSP responder under
gunicorn and wrk, what front servers polling every 2 s cost, and how soon nginx, Apache and node refuse
a revoked client, and with SoftHSM2 installed the same CA's issuance and CRL republish with its key in a
PKCS#11 token beside its key file; raw ``cryptography`` figures beside; the issue's targets with
pass/fail. Uses a throwaway database. Run from the repository's top folder (``make bench``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Print benchmark figures as JSON lines, with the issue's targets and pass/fail: CRL publication "
            "at several sizes (time, peak memory), revocation to served CRL, bulk and single approvals, EST "
            "enrollments with a pre-approved code under gunicorn (linted), the "
            "CRL endpoint and the OCSP responder (100k certificates) under gunicorn and wrk, the cost of "
            "polling front servers, revocation to "
            "refusal at nginx, Apache and node, a CA key in SoftHSM2 (PKCS#11) beside a key file; raw "
            "`cryptography` figures beside. Uses a throwaway database."
        ),
    )
    parser.add_argument(
        "--settings",
        default=os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        help="Django settings module (default: DJANGO_SETTINGS_MODULE, else tests.settings).",
    )
    parser.add_argument(
        "--crl-sizes",
        default="1000,10000,100000,1000000",
        help="Comma-separated numbers of revoked entries (default 1000,10000,100000,1000000).",
    )
    parser.add_argument(
        "--skip-1m", action="store_true", help="Leave out CRL sizes of a million and more (quick runs)."
    )
    parser.add_argument(
        "--issue", type=int, default=1000, help="Requests approved in bulk, with and without lint (1000)."
    )
    parser.add_argument("--single", type=int, default=200, help="Requests approved one by one (200).")
    parser.add_argument(
        "--est",
        type=int,
        default=200,
        help="EST enrollments with a pre-approved code under gunicorn, linted; 0 leaves them out (200).",
    )
    parser.add_argument(
        "--http-seconds", type=int, default=5, help="Seconds per wrk run; 0 leaves the endpoint out (5)."
    )
    parser.add_argument("--wrk", default="wrk", help="The wrk program (default: wrk on PATH).")
    parser.add_argument(
        "--ocsp-certificates",
        type=int,
        default=100_000,
        help="Certificates of the OCSP responder's CA, a tenth revoked; 0 leaves OCSP out (100000).",
    )
    parser.add_argument(
        "--reach-runs",
        type=int,
        default=5,
        help="Revocations per front server for the revocation-to-refusal figure; 0 leaves it out (5).",
    )
    parser.add_argument(
        "--reach-servers",
        default="nginx,apache,node",
        help="Comma-separated front servers for that figure (default nginx,apache,node).",
    )
    parser.add_argument(
        "--hsm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="The CA key in SoftHSM2 beside the key file (default: on when softhsm2 is installed).",
    )
    parser.add_argument(
        "--hsm-issue", type=int, default=200, help="Requests approved in bulk per key store (200)."
    )
    parser.add_argument(
        "--hsm-crl-entries",
        type=int,
        default=100_000,
        help="Revocations under the CRL republished per key store (100000).",
    )
    parser.add_argument(
        "--signer",
        type=int,
        default=1000,
        help="Requests approved in bulk in process and through manage.py signer, lint on and off; 0 leaves "
        "the signer out (1000).",
    )
    parser.add_argument(
        "--signer-crl-entries",
        type=int,
        default=100_000,
        help="Revocations under the CRL republished in process and through the signer; 0: none (100000).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    options = arguments.parse_args(argv)
    try:
        sizes = [int(s) for s in options.crl_sizes.split(",") if s.strip()]
    except ValueError:
        arguments.error("--crl-sizes takes whole numbers separated by commas (1000,10000).")
    servers = [s.strip() for s in options.reach_servers.split(",") if s.strip()]
    if unknown := set(servers) - {"nginx", "apache", "node"}:
        arguments.error(f"--reach-servers takes nginx, apache and node, not {', '.join(sorted(unknown))}.")
    counts = (
        options.issue, options.single, options.est, options.reach_runs, options.ocsp_certificates,
        options.signer, options.signer_crl_entries,
    )  # fmt: skip
    if (
        any(size < 1 for size in sizes)
        or min(counts) < 0
        or min(options.hsm_issue, options.hsm_crl_entries) < 1
    ):
        arguments.error(
            "Sizes and counts must be positive; --issue, --single, --est and --reach-runs may be 0."
        )
    if options.skip_1m:
        sizes = [size for size in sizes if size < 1_000_000]

    os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
    import django

    django.setup()
    from bench.hsm import softhsm_installed
    from bench.run import run  # models are importable only once Django is set up

    run(
        out=sys.stdout,
        crl_sizes=sizes,
        issue_count=options.issue,
        single_count=options.single,
        wrk=shutil.which(options.wrk),
        http_seconds=max(0, options.http_seconds),
        reach_runs=options.reach_runs,
        reach_servers=servers,
        ocsp_certificates=options.ocsp_certificates,
        est_count=options.est,
        signer_issue=options.signer,
        signer_crl_entries=options.signer_crl_entries,
        hsm=softhsm_installed() if options.hsm is None else options.hsm,
        hsm_issue=options.hsm_issue,
        hsm_crl_entries=options.hsm_crl_entries,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
