"""Finding the real programs the tests drive (openssl, pkilint, nginx, apache2, node, chromium, gunicorn).

A missing program skips the test, or fails it with ENROLL_REQUIRE_REAL_CLIENTS=1 (CI, ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

#: Set in CI: a real-client test whose program is missing fails instead of being skipped.
REQUIRE_REAL_CLIENTS = os.environ.get("ENROLL_REQUIRE_REAL_CLIENTS", "") == "1"

#: Where Debian puts programs that a non-root PATH may lack (nginx and apache2 live in /usr/sbin).
_SYSTEM_DIRS = os.pathsep.join(
    ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")
)


def need_program(*names: str) -> str:
    """Path of a real program the test needs (the first of ``names`` found: on PATH, in the system
    folders, in this virtualenv); skip when it is missing, or fail with ENROLL_REQUIRE_REAL_CLIENTS=1 (CI)."""
    venv_bin = str(Path(sys.executable).parent)
    for name in names:
        for path in (None, _SYSTEM_DIRS, venv_bin):
            found = shutil.which(name, path=path)
            if found is not None:
                return found
    missing_real_client(f"{' or '.join(names)} is not installed")


def missing_real_client(message: str) -> NoReturn:
    """Skip the test for a real client (or one of its parts) that is not there; fail it instead with
    ENROLL_REQUIRE_REAL_CLIENTS=1 (CI), where nothing may be left untested for lack of a package."""
    if REQUIRE_REAL_CLIENTS:
        pytest.fail(f"{message} (ENROLL_REQUIRE_REAL_CLIENTS=1)")
    pytest.skip(message)
