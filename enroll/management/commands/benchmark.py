from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from enroll import benchmark


class Command(BaseCommand):
    help = (
        "Print benchmark figures as JSON lines: CRL build/publish at several sizes (time, peak memory) and "
        "issuance through the flow beside raw `cryptography`. Uses a throwaway database."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--crl-sizes",
            default="1000,10000,100000",
            help="Comma-separated numbers of revoked entries (default 1000,10000,100000).",
        )
        parser.add_argument("--issue", type=int, default=1000, help="Certificates to issue (default 1000).")

    def handle(self, *args: Any, **options: Any) -> None:
        sizes = [int(s) for s in options["crl_sizes"].split(",") if s.strip()]
        benchmark.run(out=self.stdout, crl_sizes=sizes, issue_count=options["issue"])
