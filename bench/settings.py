"""Settings of the benchmark's web server only (:mod:`bench.endpoint` starts gunicorn with them).

The settings the benchmark itself runs with (``ENROLL_BENCH_BASE_SETTINGS``), pointed at its throwaway
database (``ENROLL_BENCH_DATABASE_NAME``), with :mod:`bench.urls` as URLconf.
"""

from __future__ import annotations

import importlib
import os

_base = importlib.import_module(os.environ.get("ENROLL_BENCH_BASE_SETTINGS", "enroll.settings"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

ROOT_URLCONF = "bench.urls"
DATABASES = {
    **_base.DATABASES,
    "default": {**_base.DATABASES["default"], "NAME": os.environ["ENROLL_BENCH_DATABASE_NAME"]},
}
ALLOWED_HOSTS = ["127.0.0.1"]
SECURE_SSL_REDIRECT = False  # plain HTTP on loopback for both views alike
if os.environ.get("ENROLL_BENCH_QUEUED_TASKS"):  # bench.est: the owner's mail is queued, as in production
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
