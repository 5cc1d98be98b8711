"""Shared fixtures: a CA, alice, bob, an administrator, CSR helpers and real-program lookup; the harness's
fixtures (real servers, the portal's chain and clients) registered once (tests/harness/fixtures.py); and
which pass runs the real-server tests.

Real-server tests (marker ``real_server``: nginx, Apache, node, Chromium, gunicorn; a test using a server
fixture of the harness gets the marker too) run ONCE, in the PostgreSQL pass of ``make test``: the SQLite
pass runs pytest with ``--defer-real-servers``, which deselects them there when a PostgreSQL pass will
follow, i.e. when PostgreSQL is installed. The PostgreSQL pass runs ``--real-servers without`` on two
workers, then ``--real-servers only`` one test at a time. Only the real-server tests that measure time
(marker ``timed``: a revoked client refused within 5 s, the load test's figures, an OCSP cache's expiry)
run one at a time, so that they measure the servers rather than a machine busy with other tests; every
other real-server test has its own ports and folders and runs on the workers. Run on their own
(``pytest tests/realclients``) they run on any database. Programs missing still skip, or fail with
ENROLL_REQUIRE_REAL_CLIENTS=1.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import translation

from accounts import emails
from accounts.services import mark_email_verified
from ca.models import Certificate, CertificateAuthority
from ca.services.authorities import create_ca
from enroll import flows
from tests.cli import ManagePy
from tests.harness.programs import need_program as need_program
from tests.helpers import FIXTURES as FIXTURES
from tests.helpers import fixture_bytes as fixture_bytes
from tests.helpers import make_csr as make_csr
from tests.helpers import signed_by as signed_by
from tests.pgserver import find_bindir

pytest_plugins = ("tests.harness.fixtures",)

#: The harness's fixtures that start a real server: a test using one is a ``real_server`` test.
SERVER_FIXTURES = frozenset({"nginx_factory", "apache_factory", "node_factory", "chromium"})

# Property-based tests (tests/properties/test_parser_properties.py): the same examples on every run
# (derandomized, no example database), so CI is deterministic. ENROLL_HYPOTHESIS_PROFILE=fuzz runs many
# random examples.
hypothesis.settings.register_profile(
    "enroll",
    derandomize=True,
    database=None,
    max_examples=100,
    deadline=dt.timedelta(seconds=2),
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.register_profile(
    "fuzz", parent=hypothesis.settings.get_profile("enroll"), derandomize=False, max_examples=5000
)
hypothesis.settings.load_profile(os.environ.get("ENROLL_HYPOTHESIS_PROFILE", "enroll"))

#: How many real-server tests this run left for the PostgreSQL pass (see the module's docstring).
_DEFERRED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--defer-real-servers",
        action="store_true",
        help="on SQLite, deselect the real_server tests (nginx, Apache, node, Chromium, gunicorn) when "
        "PostgreSQL is installed: they run once, in the PostgreSQL pass of make test",
    )
    parser.addoption(
        "--real-servers",
        choices=("with", "without", "only"),
        default="with",
        help="run the timed real_server tests (markers real_server and timed) with the others (default), "
        "leave them out, or run only them: the PostgreSQL pass of make test runs the others on two workers "
        "(pytest-xdist), then the timed ones one at a time (their timings measure the servers, not a busy "
        "machine)",
    )


def _on_sqlite() -> bool:
    return connection.vendor == "sqlite"


def _runs_one_at_a_time(item: pytest.Item) -> bool:
    """A real-server test that measures time (marker ``timed``): see the module's docstring."""
    return item.get_closest_marker("real_server") is not None and item.get_closest_marker("timed") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_server)
    choice = config.getoption("--real-servers")
    if choice != "with":
        keep_real = choice == "only"
        kept = [item for item in items if _runs_one_at_a_time(item) == keep_real]
        if len(kept) < len(items):
            kept_ids = {id(item) for item in kept}
            config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept_ids])
            items[:] = kept
    if not (config.getoption("--defer-real-servers") and _on_sqlite() and find_bindir() is not None):
        return
    deferred = [item for item in items if item.get_closest_marker("real_server") is not None]
    if deferred:
        config.hook.pytest_deselected(items=deferred)
        items[:] = [item for item in items if item.get_closest_marker("real_server") is None]
    config.stash[_DEFERRED] = len(deferred)


def _deferred_line(config: pytest.Config) -> str | None:
    deferred = config.stash.get(_DEFERRED, None)
    if deferred is None:
        return None
    servers = "nginx, Apache, node, Chromium, gunicorn"
    return f"{deferred} real-server tests ({servers}) deselected on SQLite: they run in the PostgreSQL pass"


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    line = _deferred_line(config)
    return [line] if line else []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    line = _deferred_line(config)
    if line:
        terminalreporter.write_sep("-", line, yellow=True)


@pytest.fixture(autouse=True)
def _fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """Every test starts with no rate-limit counters. They live in a database cache table, which plain
    database tests roll back but tests with live servers (transactional) do not."""
    if {"transactional_db", "live_server"} & set(request.fixturenames):
        request.getfixturevalue("transactional_db")
        caches["ratelimit"].clear()


@pytest.fixture(autouse=True)
def _mail_queued_as_in_autocommit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mail is enqueued on commit (:func:`accounts.emails.after_commit`). A request runs in autocommit,
    where Django calls such a callback at once when no transaction of the portal's code is open; a
    database test is one transaction that never commits, where it would never be called. So here a mail's
    enqueue registered while only the test's own transaction is open runs at once, as in production;
    inside a transaction of the code under test it still waits for that commit (and tests that capture
    on-commit callbacks capture it). Tests that commit for real (transactional) need none of this."""
    if {"transactional_db", "live_server"} & set(request.fixturenames):
        return
    original = BaseDatabaseWrapper.on_commit

    def on_commit(self: BaseDatabaseWrapper, func: Callable[[], Any], robust: bool = False) -> None:
        if (
            isinstance(func, partial)
            and func.func is emails.enqueue
            and all(getattr(block, "_from_testcase", False) for block in self.atomic_blocks)
        ):
            func()
            return
        original(self, func, robust)

    monkeypatch.setattr(BaseDatabaseWrapper, "on_commit", on_commit)


@pytest.fixture(autouse=True)
def _english_after_each_test() -> Iterator[None]:
    """A German request leaves German active in its thread (LocaleMiddleware activates the language of each
    request and leaves it): the next test, which may read pages or call code outside a request, starts in
    English again. The one language reset of the suite (tests/i18n has none of its own)."""
    yield
    translation.deactivate()


@pytest.fixture
def ca(db: None) -> CertificateAuthority:
    """A root CA (EC P-256) that issues client certificates."""
    return create_ca(name="Test Root CA", slug="test-root", make_default=True)


@pytest.fixture
def alice(db: None) -> User:
    user = User.objects.create_user("alice", "alice@example.com", "alice-password-123")
    mark_email_verified(user)
    return user


@pytest.fixture
def bob(db: None) -> User:
    user = User.objects.create_user("bob", "bob@example.com", "bob-password-123")
    mark_email_verified(user)
    return user


@pytest.fixture
def admin_user(db: None) -> User:
    return User.objects.create_superuser("admin", "admin@example.com", "admin-password-123")


@pytest.fixture
def issue_for() -> Callable[..., Certificate]:
    """Submit and approve a CSR for a user; return the certificate."""

    def issue(user: User, csr: bytes | None = None) -> Certificate:
        request = flows.submit_csr(owner=user, data=csr or make_csr())
        approved = flows.approve(request_id=request.pk)
        assert approved.certificate is not None, approved.reason
        return approved.certificate

    return issue


@pytest.fixture(scope="session")
def new_installation(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], ManagePy]:
    """``new_installation(folder)``: a fresh installation driven by manage.py (:class:`tests.cli.ManagePy`)
    whose SQLite database is migrated already. A real ``manage.py migrate`` of an empty database runs once
    per test process (and must succeed); each installation starts from a copy of that database rather than
    migrating again (several seconds a time)."""
    migrated = ManagePy(tmp_path_factory.mktemp("migrated"))
    migrated.ok("migrate", "--noinput")

    def install(folder: Path) -> ManagePy:
        cli = ManagePy(folder)
        shutil.copyfile(migrated.database, cli.database)
        return cli

    return install
