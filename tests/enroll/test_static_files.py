"""The production static-file setup: collectstatic with whitenoise's manifest storage succeeds."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from django.core.management import call_command
from django.test import override_settings

MANIFEST = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


def test_collectstatic_with_the_production_storage_finds_every_referenced_file(tmp_path: Path) -> None:
    with override_settings(STORAGES=MANIFEST, STATIC_ROOT=tmp_path):
        out = StringIO()
        call_command("collectstatic", "--noinput", stdout=out)
    assert "post-processed" in out.getvalue()
    assert (tmp_path / "staticfiles.json").exists()
    assert list(tmp_path.glob("vendor/bootstrap/bootstrap.min.*.css"))
