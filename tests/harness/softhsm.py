"""SoftHSM2, Debian's software PKCS#11 token, for the tests of CA keys in a token (:mod:`ca.pki.pkcs11`).

Each test module gets its own token directory (``SOFTHSM2_CONF`` names a config file that points at it,
with the file object store), and each test its own token in it (``softhsm2-util --init-token --free``):
keys never leak from one test into another, and nothing touches the machine's own tokens. SoftHSM2
missing skips the test, or fails it with ENROLL_REQUIRE_REAL_CLIENTS=1 (CI), like every real program.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ca.pki.pkcs11 import SOFTHSM2_MODULE, reinitialize_modules
from ca.services import keys
from tests.harness.programs import missing_real_client, need_program

PIN = "123456"
SO_PIN = "12345678"

#: Token labels are unique in a test process, whichever token directory they are in.
_labels = itertools.count()


def need_softhsm() -> str:
    """softhsm2-util's path; skip (or fail in CI) when SoftHSM2 or its PKCS#11 module is missing."""
    util = need_program("softhsm2-util")
    if not Path(SOFTHSM2_MODULE).exists():
        missing_real_client(f"the SoftHSM2 PKCS#11 module {SOFTHSM2_MODULE} is not installed")
    return util


@dataclass
class SoftHsm:
    """A private SoftHSM2 token directory; :meth:`token` makes a new token in it."""

    directory: Path
    util: str
    module: str = SOFTHSM2_MODULE

    @property
    def conf(self) -> Path:
        return self.directory / "softhsm2.conf"

    def env(self) -> dict[str, str]:
        """The environment a subprocess needs to see these tokens."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def token(self, *, pin: str = PIN) -> str:
        """A new, initialised token with user PIN ``pin``; its label."""
        label = f"enroll-test-{os.getpid()}-{next(_labels)}"
        command = [self.util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN]
        result = subprocess.run(
            command, env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return label

    def pin_file(self, pin: str = PIN, *, name: str = "pin") -> Path:
        path = self.directory / name
        path.write_text(pin + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def options(self, token: str, *, pin_file: Path | None = None) -> dict[str, Any]:
        """The PKCS#11 options of init_ca, import_ca and move_ca_key, for ``call_command``."""
        return {
            "pkcs11_module": self.module,
            "pkcs11_token": token,
            "pkcs11_pin_file": pin_file or self.pin_file(),
        }

    def argv(self, token: str, *, pin_file: Path | None = None) -> list[str]:
        """The same options on a command line."""
        pin = pin_file or self.pin_file()
        return ["--pkcs11-module", self.module, "--pkcs11-token", token, "--pkcs11-pin-file", str(pin)]


@contextmanager
def softhsm(directory: Path) -> Iterator[SoftHsm]:
    """A SoftHSM2 token directory in ``directory``, made current for this process (``SOFTHSM2_CONF``),
    the previous configuration restored and the processes' token backends forgotten afterwards."""
    util = need_softhsm()
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    hsm = SoftHsm(directory=directory, util=util)
    hsm.conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n", encoding="utf-8"
    )
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    reinitialize_modules()
    try:
        yield hsm
    finally:
        keys.clear_key_cache()
        reinitialize_modules()
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before
