"""Django's SQLite backend, with the writers of one database file queued instead of polling.

The portal's SQLite transactions are IMMEDIATE (settings): each takes the database's one write lock at its
BEGIN. SQLite makes a writer that finds the lock taken poll for it, sleeping 1, 2, 5, 10, 15, 20, 25, 25,
25, 50, 50 and then 100 ms between tries (its busy handler, up to the ``timeout`` option). Under load the
lock is then often free while every writer that wants it sleeps: on 2 cores the workers of a busy EST
endpoint stayed a quarter idle, waiting.

This backend queues those writers instead. Before its BEGIN, a transaction takes a process-wide lock of
the database file (threads of one process hand it over at once) and then an exclusive ``flock`` of a lock
file beside the database (``<database>-writer.lock``, for the other processes: web workers, the signer,
the mail worker, commands); both are released when the transaction commits or rolls back, or the
connection closes (and by the kernel when a process dies). SQLite's own locking is unchanged underneath:
autocommit statements outside a transaction, and any program that does not use this backend, still meet
SQLite's lock and busy handler, so correctness never depends on the queue. Waiting is bounded by the same
``timeout`` option as SQLite's (20 s in the portal's settings); past it the transaction fails with
"database is locked", as it would without the queue.

A database in memory, or a lock file that cannot be opened (another user's folder), is left to SQLite's
busy handler alone (the latter logged once).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

logger = logging.getLogger(__name__)

#: Seconds between two tries for another process's lock file (the wait inside one process needs none).
_POLL_SECONDS = 0.0005

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(path: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(path, threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    """SQLite whose IMMEDIATE (or EXCLUSIVE) transactions queue for the write lock (see the module)."""

    _writer_fd: int | None = None
    _writer_locks: tuple[threading.Lock, bool] | None = None  # held: (process lock, lock file too)
    _writer_unusable = False

    def _lock_file(self) -> int | None:
        """The lock file's descriptor (opened once per connection), or None where there is none."""
        if self._writer_fd is None and not self._writer_unusable:
            path = f"{self.settings_dict['NAME']}-writer.lock"
            try:
                self._writer_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
            except OSError as exc:
                self._writer_unusable = True
                logger.warning("writers wait in SQLite's busy handler: cannot open %s (%s)", path, exc)
        return self._writer_fd

    def _queues_writers(self) -> bool:
        mode = str(getattr(self, "transaction_mode", None) or "").upper()  # not in django-stubs
        return mode in {"IMMEDIATE", "EXCLUSIVE"} and not self.is_in_memory_db()

    def _start_transaction_under_autocommit(self) -> None:
        if self._writer_locks is None and self._queues_writers():
            self._take_writer_locks()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private: not in the stubs
        except BaseException:
            self._release_writer_locks()
            raise

    def _take_writer_locks(self) -> None:
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        deadline = time.monotonic() + timeout
        process_lock = _process_lock(str(self.settings_dict["NAME"]))
        if not process_lock.acquire(timeout=timeout):
            raise OperationalError("database is locked (no write lock within the timeout)")
        fd = self._lock_file()
        if fd is None:
            self._writer_locks = (process_lock, False)
            return
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    process_lock.release()
                    raise OperationalError("database is locked (no write lock within the timeout)") from None
                time.sleep(_POLL_SECONDS)
        self._writer_locks = (process_lock, True)

    def _release_writer_locks(self) -> None:
        held, self._writer_locks = self._writer_locks, None
        if held is None:
            return
        process_lock, file_locked = held
        try:
            if file_locked and self._writer_fd is not None:
                fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
        finally:
            process_lock.release()

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]
        finally:
            self._release_writer_locks()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]
        finally:
            self._release_writer_locks()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]
        finally:
            self._release_writer_locks()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None
