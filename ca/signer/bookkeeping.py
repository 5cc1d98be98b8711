"""The signer's bookkeeping beside its signatures: the rate limit per caller uid, and the writer thread that
puts the audit entries and the authorisations' ``used_at`` into the database in batches, in transactions
of its own (the caller's transaction may hold the database's write lock while it waits for a signature).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from django.db import close_old_connections, connections, transaction

from ca import audit
from ca.clock import utcnow
from ca.services import authorisations

logger = logging.getLogger(__name__)

#: Seconds the writer collects audit entries before it writes them in one transaction.
FLUSH_SECONDS = 0.5


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class RateLimit:
    """A token bucket per caller uid: ``rate`` signatures a second, bursts of a minute's worth."""

    rate: float
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, uid: int, count: int = 1) -> bool:
        """Whether ``uid`` may have ``count`` more signatures now (all of them, or none)."""
        now = time.monotonic()
        burst = self.rate * 60
        with self.lock:
            bucket = self.buckets.setdefault(uid, _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < count:
                return False
            bucket.tokens -= count
            return True


@dataclass(frozen=True, slots=True)
class Note:
    """One thing for the writer: an audit entry, and the authorisation to mark used."""

    item: audit.AuditItem
    authorisation: int | None = None


class Writer(threading.Thread):
    """Writes audit entries and ``used_at`` in batches, in transactions of its own, retrying on errors."""

    def __init__(self) -> None:
        super().__init__(name="signer-writer", daemon=True)
        self.notes: queue.Queue[Note | None] = queue.Queue()

    def run(self) -> None:
        stopping = False
        while not stopping:
            notes = self._collect(self.notes.get())
            stopping = None in notes
            batch = [note for note in notes if note is not None]
            if batch:
                self._write(batch)
        connections.close_all()

    def _collect(self, first: Note | None) -> list[Note | None]:
        """``first`` and what else arrives within :data:`FLUSH_SECONDS` (at most 1000): one transaction
        for a batch, so the writer never competes with the signatures for the database or the CPU."""
        notes = [first]
        deadline = time.monotonic() + FLUSH_SECONDS
        while first is not None and len(notes) < 1000 and (left := deadline - time.monotonic()) > 0:
            try:
                note = self.notes.get(timeout=left)
            except queue.Empty:
                break
            notes.append(note)
            if note is None:
                break
        return notes

    def _write(self, batch: list[Note]) -> None:
        for attempt in range(30):
            try:
                now = utcnow()
                with transaction.atomic():
                    audit.record_many([note.item for note in batch], now=now)
                    ids = [note.authorisation for note in batch if note.authorisation is not None]
                    authorisations.mark_used(ids=ids, now=now)
                return
            except Exception:  # the database is busy or gone: keep the entries and try again
                logger.exception("the signer could not write %s audit entries (try %s)", len(batch), attempt)
                close_old_connections()
                time.sleep(min(2.0, 0.1 * (attempt + 1)))
        logger.error("the signer dropped %s audit entries after 30 tries: %s", len(batch), batch)

    def stop(self) -> None:
        self.notes.put(None)
        self.join(timeout=60)
