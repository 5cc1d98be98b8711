"""The German catalogue compiled for the tests that read German (``make messages`` does it for ``make
test``; this covers a plain ``pytest tests/i18n``): msgfmt into a temporary file, then renamed, so parallel
workers never read half a file. Missing GNU gettext skips, or fails with ENROLL_REQUIRE_REAL_CLIENTS=1.
Every test ends in English: the autouse fixture of tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.signals import setting_changed

from tests.harness.programs import need_program

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "enroll" / "locale" / "de" / "LC_MESSAGES" / "django.po"


@pytest.fixture(scope="session")
def compiled_catalogue() -> Path:
    """The compiled German catalogue (django.mo), up to date with django.po."""
    compiled = CATALOGUE.with_suffix(".mo")
    if not compiled.exists() or compiled.stat().st_mtime < CATALOGUE.stat().st_mtime:
        msgfmt = need_program("msgfmt")
        partial = compiled.with_name(f".django.{os.getpid()}.mo")
        subprocess.run([msgfmt, "--check", "-o", str(partial), str(CATALOGUE)], check=True)
        partial.replace(compiled)
        # Django keeps the catalogues it loaded (perhaps before this one existed): have it read them again,
        # as when a test changes LOCALE_PATHS (django.test.signals.language_changed).
        setting_changed.send(
            sender=type(settings),
            setting="LOCALE_PATHS",
            value=settings.LOCALE_PATHS,
            enter=False,
        )
    return compiled


@pytest.fixture
def german(compiled_catalogue: Path) -> None:
    """Tests that read German need the compiled catalogue."""
