"""The database cache table of the rate-limit counters (settings.CACHES["ratelimit"]).

``migrate`` makes it, so ``make run``, the tests and the production steps need no separate
``createcachetable``; running that command anyway does nothing once the table exists.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps: Any, schema_editor: Any) -> None:
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(create_cache_tables, migrations.RunPython.noop, elidable=True)]
