"""Settings of the live portal processes in the load test (tests/realclients/test_load.py): the real
settings module, fed the environment the test gives (DATABASE_URL, ENROLL_PUBLIC_URL, ...), with three
test-only changes.

- Mail goes to files in ``$ENROLL_LOAD_MAIL_DIR``, one file per message (the test reads the verification
  links there). Django's file backend names its files by second and ``id(self)``, which several gunicorn
  workers forked alike can share, and then their messages interleave in one file.
- Cookies are not ``Secure``: the load runs over plain HTTP on loopback (nginx in front, no TLS).
- Static files come from the finders (no collectstatic), as in ``tests.settings``; and passwords use
  the fast hasher of ``tests.settings``, so the load measures the portal rather than PBKDF2.

Not for pytest itself (that is ``tests.settings``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from django.core.mail.backends import filebased

from enroll.settings import *  # noqa: F403


class OneFilePerMessageBackend(filebased.EmailBackend):
    """Django's file backend, writing every connection's messages to a file of its own."""

    _own_name: str | None = None

    def _get_filename(self) -> str:
        if self._own_name is None:
            self._own_name = str(Path(EMAIL_FILE_PATH) / f"{os.getpid()}-{uuid.uuid4().hex}.eml")
        return self._own_name


EMAIL_BACKEND = "tests.load_settings.OneFilePerMessageBackend"
EMAIL_FILE_PATH = os.environ["ENROLL_LOAD_MAIL_DIR"]
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_USE_FINDERS = True
