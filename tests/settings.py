"""Test settings: the real settings module, fed a test environment.

DATABASE_URL passes through, so the same suite runs on SQLite (default) and PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("ENROLL_DATA_DIR", tempfile.mkdtemp(prefix="enroll-test-"))
os.environ.setdefault("ENROLL_PUBLIC_URL", "http://pki.example.test")
os.environ.setdefault("ENROLL_CA_PASSPHRASE", "test-passphrase-0123456789")

from enroll.settings import *  # noqa: F403

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tasks (every e-mail) run inline, so mail.outbox has them; tests/accounts/test_mail_tasks.py runs the
# database backend and its worker, manage.py db_worker.
TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# No collectstatic in tests: serve from the finders, without the manifest.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
if DATABASES["default"]["ENGINE"] == "enroll.sqlite":  # noqa: F405
    # Django's own choice for SQLite test databases (in memory), said outright: pytest-django recognises
    # only Django's SQLite engine by name and would otherwise give each xdist worker a file name of
    # "test_" + the whole path.
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}  # noqa: F405
