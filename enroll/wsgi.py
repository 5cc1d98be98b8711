"""The portal as a WSGI application (``enroll.wsgi:application``) for gunicorn or any WSGI server.

Loading it also does now what each process's first requests would otherwise wait for: the URLconf and the
views it imports, with the table ``reverse()`` reads, and pkilint's validators when certificates are linted
before signing (together a fifth to half a second, measured). With gunicorn's ``--preload`` that happens once,
in the master, before it forks the workers (docs/OPERATIONS.md).
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "enroll.settings")
application = get_wsgi_application()


def _warm_up() -> None:
    get_resolver().reverse_dict  # noqa: B018  # imports the URLconf and views, builds reverse()'s table
    if settings.ENROLL_LINT_BEFORE_SIGN:
        from ca.pki import lint

        lint.warm_up()


_warm_up()
