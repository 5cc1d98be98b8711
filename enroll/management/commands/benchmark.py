from __future__ import annotations

import argparse
import shutil
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from enroll import benchmark


class Command(BaseCommand):
    help = (
        "Print benchmark figures as JSON lines, with the issue's targets and pass/fail: CRL publication at "
        "several sizes (time, peak memory), revocation to served CRL, bulk and single approvals, the CRL "
        "endpoint under gunicorn and wrk; raw `cryptography` figures beside. Uses a throwaway database."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
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
            "--http-seconds", type=int, default=5, help="Seconds per wrk run; 0 leaves the endpoint out (5)."
        )
        parser.add_argument("--wrk", default="wrk", help="The wrk program (default: wrk on PATH).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sizes = [int(s) for s in options["crl_sizes"].split(",") if s.strip()]
        except ValueError:
            raise CommandError("--crl-sizes takes whole numbers separated by commas (1000,10000).") from None
        if any(size < 1 for size in sizes) or min(options["issue"], options["single"]) < 0:
            raise CommandError("Sizes and counts must be positive; --issue and --single may be 0.")
        if options["skip_1m"]:
            sizes = [size for size in sizes if size < 1_000_000]
        benchmark.run(
            out=self.stdout,
            crl_sizes=sizes,
            issue_count=options["issue"],
            single_count=options["single"],
            wrk=shutil.which(options["wrk"]),
            http_seconds=max(0, options["http_seconds"]),
        )
