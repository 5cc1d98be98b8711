from __future__ import annotations

import argparse
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ca.signer.server import Signer, SignerStartError


class Command(BaseCommand):
    help = (
        "Run the signer: the one process that opens the CA keys. It listens on ENROLL_SIGNER_SOCKET (mode "
        "0660), serves the uids in ENROLL_SIGNER_ALLOWED_UIDS (default: its own), re-checks everything it "
        "is asked to sign and stops on SIGTERM or SIGINT."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--socket", help="the socket's path (default: ENROLL_SIGNER_SOCKET)")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["socket"] or settings.ENROLL_SIGNER_SOCKET
        if not path:
            raise CommandError(
                "Set ENROLL_SIGNER_SOCKET (or pass --socket PATH) to the signer's socket path."
            )
        signer = Signer(path=path)
        try:
            signer.bind()
        except (SignerStartError, OSError) as exc:
            raise CommandError(str(exc)) from None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: signer.stop())
        self.stdout.write(f"The signer listens on {path}.")
        self.stdout.flush()
        signer.serve_forever()
