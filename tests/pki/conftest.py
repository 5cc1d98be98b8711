"""The PKI core's tests (ca.pki) use no database: a test here that asks for one fails at once."""

from __future__ import annotations

import pytest

#: pytest-django's fixtures that open the test database (and the ones of tests/conftest.py built on it).
DATABASE_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server"}
)


@pytest.fixture(autouse=True)
def _no_database(request: pytest.FixtureRequest) -> None:
    used = sorted(DATABASE_FIXTURES & set(request.fixturenames))
    if used or request.node.get_closest_marker("django_db") is not None:
        asked = ", ".join(used) or "django_db"
        pytest.fail(f"tests/pki is the PKI core without a database; this test asks for one ({asked})")
