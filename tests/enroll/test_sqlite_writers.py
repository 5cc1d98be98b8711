"""The SQLite backend that queues writers (enroll.sqlite): an IMMEDIATE transaction waits for the one before
it in a queue (threads of one process, then a lock file for other processes) instead of SQLite's polling
busy handler; the queue is let go on commit, rollback, close and a process's death; the wait is bounded by
the database's timeout; where there is no lock file, SQLite's own locking is all there is."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError
from django.db.utils import ConnectionHandler

from enroll.sqlite.base import DatabaseWrapper

pytestmark = pytest.mark.django_db  # the suite's own database is not used: each test has its file


def open_database(path: Path, *, timeout: float = 5) -> DatabaseWrapper:
    """A connection of this backend to the file ``path``, for the calling thread, as the settings make it."""
    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "enroll.sqlite",
                "NAME": str(path),
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": timeout},
            }
        }
    )
    wrapper = handler["default"]
    assert isinstance(wrapper, DatabaseWrapper)
    return wrapper


def begin(wrapper: DatabaseWrapper) -> None:
    """What transaction.atomic() does first: BEGIN IMMEDIATE."""
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def commit(wrapper: DatabaseWrapper) -> None:
    wrapper.commit()
    wrapper.set_autocommit(True)


def rollback(wrapper: DatabaseWrapper) -> None:
    wrapper.rollback()
    wrapper.set_autocommit(True)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "writers.sqlite3"
    wrapper = open_database(path)
    with wrapper.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("CREATE TABLE events (what TEXT)")
    wrapper.close()
    return path


def events(path: Path) -> list[str]:
    wrapper = open_database(path)
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT what FROM events ORDER BY rowid")
        rows = [str(row[0]) for row in cursor.fetchall()]
    wrapper.close()
    return rows


def hold_lock_file(path: Path) -> subprocess.Popen[str]:
    """Another process holding the queue's lock file (as a writer in another worker would), until stdin
    closes; it prints "held" once it has the lock."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path) + '-writer.lock'!r}, os.O_RDWR | os.O_CREAT, 0o660)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def lock_file_frees_within(path: Path, *, seconds: float) -> bool:
    """Whether another descriptor can take the lock file now or within ``seconds`` (then it lets go)."""
    fd = os.open(f"{path}-writer.lock", os.O_RDWR)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
    finally:
        os.close(fd)


def test_a_second_writer_in_the_process_waits_for_the_first_to_commit(database: Path) -> None:
    first_began = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        wrapper = open_database(database)
        try:
            begin(wrapper)
            first_began.set()
            with wrapper.cursor() as cursor:
                time.sleep(0.2)  # the second writer asks for the lock meanwhile
                cursor.execute("INSERT INTO events VALUES ('first writes')")
            commit(wrapper)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            wrapper.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert first_began.wait(5)
    second = open_database(database)
    begin(second)  # waits in the queue
    with second.cursor() as cursor:
        cursor.execute("INSERT INTO events VALUES ('second writes')")
    commit(second)
    second.close()
    thread.join()

    assert errors == []
    assert events(database) == ["first writes", "second writes"]


def test_a_writer_waits_for_another_process_that_holds_the_lock_file(database: Path) -> None:
    holder = hold_lock_file(database)
    released = threading.Timer(0.3, lambda: holder.stdin.close() if holder.stdin else None)
    released.start()
    wrapper = open_database(database)
    started = time.monotonic()

    begin(wrapper)

    assert time.monotonic() - started >= 0.25, "it began before the other process let go"
    assert holder.wait(5) == 0
    rollback(wrapper)
    wrapper.close()


def test_the_wait_ends_with_database_is_locked_after_the_timeout(database: Path) -> None:
    holder = hold_lock_file(database)
    try:
        wrapper = open_database(database, timeout=0.2)
        with pytest.raises(OperationalError, match="database is locked"):
            begin(wrapper)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(5)
    # the wait given up gets the lock once the other process lets go, and lets go of it at once
    assert lock_file_frees_within(database, seconds=5)
    wrapper.set_autocommit(True)
    begin(wrapper)  # the failed wait left nothing held: the queue is free again
    rollback(wrapper)
    wrapper.close()


def test_a_writer_that_dies_holding_the_lock_lets_the_next_one_in(database: Path) -> None:
    holder = hold_lock_file(database)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(5)
    wrapper = open_database(database, timeout=2)

    begin(wrapper)

    rollback(wrapper)
    wrapper.close()


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_the_queue_is_let_go_on_commit_rollback_and_close(database: Path, end: str) -> None:
    first = open_database(database)
    begin(first)
    {"commit": commit, "rollback": rollback, "close": DatabaseWrapper.close}[end](first)

    assert lock_file_frees_within(database, seconds=0)  # free at once
    second = open_database(database, timeout=0.2)
    begin(second)
    rollback(second)
    second.close()
    first.close()


def test_without_a_usable_lock_file_sqlite_locks_alone(
    database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Path(f"{database}-writer.lock").mkdir()  # cannot be opened as a file
    wrapper = open_database(database)

    begin(wrapper)
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO events VALUES ('written')")
    commit(wrapper)
    wrapper.close()

    assert events(database) == ["written"]
    assert "busy handler" in caplog.text


def test_a_database_in_memory_has_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    wrapper = open_database(Path(":memory:"))

    begin(wrapper)
    rollback(wrapper)
    wrapper.close()

    assert list(tmp_path.iterdir()) == []
