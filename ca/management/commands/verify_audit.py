from __future__ import annotations

import argparse
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ca import audit


def _sha256_hex(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise argparse.ArgumentTypeError("give the 64 hex digits of a head hash a previous run printed")
    return value.strip().lower()


def _count(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise argparse.ArgumentTypeError("give the number of entries a previous run printed")
    return int(value)


class Command(BaseCommand):
    help = (
        "Check the audit log's hash chain from the first entry to the newest. Prints one line with the "
        "number of entries and the head hash (keep it outside the database and pass it back next time); "
        "exits 1 naming the first entry that was edited, inserted, deleted or moved. Entries a crash left "
        "unchained are chained first."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--expect-head",
            metavar="HASH",
            type=_sha256_hex,
            help="A head hash printed by an earlier run: it must still be in the chain.",
        )
        parser.add_argument(
            "--expect-count",
            metavar="N",
            type=_count,
            help="The entry count printed by an earlier run: the chain must have at least that many.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        audit.seal()  # entries a crash left unchained join the chain first
        check = audit.verify_chain(expect_head=options["expect_head"], expect_count=options["expect_count"])
        if not check.intact:
            raise CommandError(check.summary)
        self.stdout.write(check.summary)
