"""The real ``openssl`` command line for tests (keys, SPKACs, PKCS#12 files, ``verify``, ``ocsp``)."""

from __future__ import annotations

import subprocess

from tests.harness.programs import need_program


def openssl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``openssl ARGS...`` (found by :func:`~tests.harness.programs.need_program`), output captured,
    without raising on a non-zero exit status."""
    return subprocess.run([need_program("openssl"), *args], capture_output=True, timeout=timeout, check=False)
