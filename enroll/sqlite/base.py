"""Django's SQLite backend, with the writers of one database file queued instead of polling.

The portal's SQLite transactions are IMMEDIATE (settings): each takes the database's one write lock at its
BEGIN. SQLite makes a writer that finds the lock taken poll for it, sleeping 1, 2, 5, 10, 15, 20, 25, 25,
25, 50, 50 and then 100 ms between tries (its busy handler, up to the ``timeout`` option). Under load the
lock is then often free while every writer that wants it sleeps: on 2 cores the workers of a busy EST
endpoint stayed a quarter idle, waiting.

This backend queues those writers instead. Before its BEGIN, a transaction takes a process-wide lock of
the database file (threads of one process hand it over at once) and then an exclusive ``flock`` of a lock
file beside the database (``<database>-writer.lock``, for the other processes: web workers, the signer,
the mail worker, commands), waiting for it in the kernel (a blocking ``flock`` in a thread of its own, so
that the wait can be given up at the timeout; the next writer is woken the moment the lock is let go, and
waiting costs no CPU); both are released when the transaction commits or rolls back, or the connection
closes (and by the kernel when a process dies). SQLite's own locking is unchanged underneath:
autocommit statements outside a transaction, and any program that does not use this backend, still meet
SQLite's lock and busy handler, so correctness never depends on the queue. Waiting is bounded by the same
``timeout`` option as SQLite's (20 s in the portal's settings); past it the transaction fails with
"database is locked", as it would without the queue.

The lock file is opened read-only (``flock`` needs no more), so every user who may read the database's
folder can queue, whoever created the file. A database in memory, or a lock file that cannot be opened or
created, is left to SQLite's busy handler alone (the latter logged once).
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

LOCKED = "database is locked (no write lock within the timeout)"

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(path: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(path, threading.Lock())


class _FileWait:
    """One wait for the lock file: a blocking ``flock`` on a descriptor of its own, in a thread of its own,
    which the caller may give up at its timeout; a wait given up lets go of the lock once it gets it."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.done = threading.Event()
        self.guard = threading.Lock()
        self.given_up = False
        self.locked = False
        threading.Thread(target=self._wait, name="sqlite-writer-wait", daemon=True).start()

    def _wait(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:
            with self.guard:
                os.close(self.fd)
                self.given_up = True
            self.done.set()
            return
        with self.guard:
            if self.given_up:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            else:
                self.locked = True
        self.done.set()

    def result(self, timeout: float) -> int | None:
        """The descriptor that holds the lock, or None when it did not come within ``timeout`` seconds."""
        self.done.wait(max(timeout, 0))
        with self.guard:
            if self.locked:
                return self.fd
            self.given_up = True
            return None


class DatabaseWrapper(base.DatabaseWrapper):
    """SQLite whose IMMEDIATE (or EXCLUSIVE) transactions queue for the write lock (see the module)."""

    _writer_fd: int | None = None  # this connection's descriptor of the lock file, opened once
    _writer_locks: tuple[threading.Lock, int | None] | None = None  # held: process lock, locked descriptor
    _writer_unusable = False

    def _lock_path(self) -> str:
        return f"{self.settings_dict['NAME']}-writer.lock"

    def _lock_file(self) -> int | None:
        """The lock file's descriptor (opened once per connection), or None where there is none."""
        if self._writer_fd is None and not self._writer_unusable:
            path = self._lock_path()
            try:
                self._writer_fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o660)
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
            raise OperationalError(LOCKED)
        try:
            self._writer_locks = (process_lock, self._lock_file_locked(deadline))
        except BaseException:
            process_lock.release()
            raise

    def _lock_file_locked(self, deadline: float) -> int | None:
        """The descriptor that now holds the lock file, or None where there is no lock file."""
        fd = self._lock_file()
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass  # another process writes: wait in the kernel
        try:
            locked = _FileWait(self._lock_path()).result(deadline - time.monotonic())
        except OSError as exc:
            raise OperationalError(f"{LOCKED}: {exc}") from exc
        if locked is None:
            raise OperationalError(LOCKED)
        return locked

    def _release_writer_locks(self) -> None:
        held, self._writer_locks = self._writer_locks, None
        if held is None:
            return
        process_lock, fd = held
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                if fd != self._writer_fd:
                    os.close(fd)  # a wait's own descriptor
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
