"""The audit log: every sign-up, submission, decision, issuance, revocation and CRL publication.

Callers record inside the same transaction as the change, so an entry exists exactly when the change does.

The log is a hash chain. Entry number ``sequence`` (1, 2, 3, ... without gaps) stores ``prev_hash``, the
``entry_hash`` of entry ``sequence - 1`` (64 zeros for #1), and its own ``entry_hash``: the SHA-256 of a
canonical serialisation of its fields (:func:`canonical_bytes`, version :data:`HASH_VERSION`): JSON with
sorted keys and no spaces, ASCII only, the time as UTC ISO 8601 with microseconds. The same bytes come out
on SQLite and PostgreSQL, so a database moved between them still verifies. :func:`verify_chain` (``manage.py
verify_audit``) walks the chain and names the first entry that was edited, inserted, removed or moved.

What the chain proves, honestly: nobody changed, added or removed an entry *without rewriting every later
entry's hashes*. Anyone who can write to the database can also rewrite the chain from the point they
changed to the end, or drop the newest entries; only a head kept outside the database catches that. Keep
the line ``verify_audit`` prints (entries and head hash) somewhere else (a ticket, a log server) and pass it
back with ``--expect-head``/``--expect-count``: the chain must still contain that head.

Appending never waits for a lock inside the caller's transaction, so it cannot deadlock with the row
locks callers hold or take later (an approval records, then inserts the certificate, whose foreign key
waits on a CA row that a revocation holds while it waits to record). Only one transaction at a time holds
the chain (PostgreSQL: a transaction-level advisory lock, taken with a try; SQLite: the portal's
IMMEDIATE transactions hold the database's write lock from BEGIN):

* the holder reads the head and chains its entries (and any committed entries still waiting) at once,
  in one INSERT, before it commits: the normal case;
* a transaction that finds the chain held by another stores its entries unchained (``sequence`` NULL)
  and chains them right after its commit (:func:`seal`, in a short transaction of its own that holds no
  other lock, so waiting for the chain there is safe). Entries left unchained by a crash are chained by
  the next append or by ``verify_audit``.

Either way two transactions never chain onto the same predecessor, and the unique ``sequence`` would
refuse it if they did. :func:`record_many` appends any number of entries with one lock and one INSERT;
inside :func:`batch`, every entry a step records (one device enrollment: code used, request submitted,
approved, certificate issued) is appended at the block's end the same way, still inside its transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from ca.clock import utcnow
from ca.models import AuditEntry, AuditEvent
from ca.types import Account

#: The version of :func:`canonical_bytes` new entries are hashed with.
HASH_VERSION = 1
#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64
#: The fields each entry's hash covers (version 1). The ``actor`` link is left out on purpose: it is set to
#: NULL when the account is deleted; ``actor_name`` keeps who it was and is covered. The primary key is left
#: out too: ``sequence`` is the entry's identity in the chain.
HASHED_FIELDS = (
    "sequence",
    "hash_version",
    "prev_hash",
    "created_at",
    "event",
    "actor_name",
    "subject_user",
    "ca_slug",
    "request_sha256",
    "serial",
    "crl_number",
    "detail",
)
#: PostgreSQL advisory lock key of the chain (any constant bigint; "enroll" in ASCII).
_CHAIN_LOCK_KEY = 0x656E726F6C6C


def _utc_iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def canonical_bytes(values: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash is computed over, from its :data:`HASHED_FIELDS` values.

    Version 1 must never change: entries hashed with it stay in the database. A new serialisation gets a
    new version number (stored per entry in ``hash_version``) and a new branch here.
    """
    version = values["hash_version"]
    if version != 1:
        raise ValueError(f"unknown audit hash version {version!r}")
    document: dict[str, Any] = {
        "sequence": int(values["sequence"]),
        "hash_version": 1,
        "prev_hash": str(values["prev_hash"]),
        "created_at": _utc_iso(values["created_at"]),
        "event": str(values["event"]),
        "actor_name": str(values["actor_name"]),
        "subject_user": str(values["subject_user"]),
        "ca_slug": str(values["ca_slug"]),
        "request_sha256": str(values["request_sha256"]),
        "serial": str(values["serial"]),
        "crl_number": None if values["crl_number"] is None else int(values["crl_number"]),
        "detail": str(values["detail"]),
    }
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def entry_hash(values: Mapping[str, Any]) -> str:
    """Lower-case hex SHA-256 of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(values)).hexdigest()


def _lock_chain(*, wait: bool) -> bool:
    """Hold the chain until the current transaction ends; without ``wait``, give up if another holds it."""
    if connection.vendor != "postgresql":
        return True  # SQLite: this IMMEDIATE transaction holds the database's write lock already
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
        row = cursor.fetchone()
    return bool(row and row[0])


_LINK_FIELDS = ["sequence", "hash_version", "prev_hash", "entry_hash"]


def _link(entries: Sequence[AuditEntry]) -> None:
    """Number, link and hash ``entries`` after the current head; the caller holds the chain."""
    head = (
        AuditEntry.objects.filter(sequence__isnull=False)
        .order_by("-sequence")
        .values_list("sequence", "entry_hash")
        .first()
    )
    sequence, previous = (head[0] or 0, head[1]) if head is not None else (0, GENESIS_HASH)
    for entry in entries:
        sequence += 1
        entry.sequence = sequence
        entry.hash_version = HASH_VERSION
        entry.prev_hash = previous
        entry.entry_hash = previous = entry_hash({name: getattr(entry, name) for name in HASHED_FIELDS})


def _waiting() -> list[AuditEntry]:
    """Committed (or this transaction's) entries not chained yet, in the order they were written."""
    # Looked up by the index on sequence (no ORDER BY, which would make SQLite walk the primary key).
    ids = sorted(AuditEntry.objects.filter(sequence__isnull=True).values_list("pk", flat=True))
    if not ids:
        return []
    return sorted(AuditEntry.objects.filter(pk__in=ids, sequence__isnull=True), key=lambda entry: entry.pk)


def _append(entries: list[AuditEntry]) -> list[AuditEntry]:
    """Insert ``entries`` in one statement, chained now if the chain is free, else right after commit.

    Inside :func:`batch` they are only noted, and appended with the batch's other entries at its end.
    No savepoint of its own: an entry that cannot be written fails the caller's whole transaction, so a
    change never commits without its entry."""
    if (pending := getattr(_batches, "pending", None)) is not None and connection.in_atomic_block:
        for entry in entries:
            marker = _Marker()
            transaction.on_commit(marker)  # dropped by Django if a savepoint around this is rolled back
            pending.append((entry, marker))
        return entries
    with transaction.atomic(savepoint=False):
        if _lock_chain(wait=False):
            waiting = _waiting()
            _link([*waiting, *entries])
            if waiting:
                AuditEntry.objects.bulk_update(waiting, _LINK_FIELDS, batch_size=500)
        else:
            transaction.on_commit(seal, robust=True)
        if len(entries) == 1:
            entries[0].save(force_insert=True)
            return entries
        return AuditEntry.objects.bulk_create(entries)


class _Marker:
    """Does nothing after commit; while the transaction runs, its presence among the commit callbacks says
    that no savepoint around the entry it marks was rolled back (Django drops the callbacks of a
    savepoint it rolls back)."""

    def __call__(self) -> None:
        return None


#: The entries of the :func:`batch` running in this thread, with their markers (None: no batch).
_batches = threading.local()


@contextmanager
def batch() -> Iterator[None]:
    """Append the entries recorded inside the block together when it ends: one chain lock, one INSERT.

    For a step that records several entries in one transaction (a pre-approved device enrollment records
    four). Run it inside the caller's transaction: the entries are written before that commits, in the
    order they were recorded, so an entry still exists exactly when its change does. An entry recorded
    inside a savepoint that was rolled back is left out with its change; when the block raises, nothing is
    written (the transaction is rolling back). A batch inside a batch joins the outer one.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit.batch() runs inside a transaction: its entries commit with the change")
    if getattr(_batches, "pending", None) is not None:
        yield
        return
    pending: list[tuple[AuditEntry, _Marker]] = []
    _batches.pending = pending
    try:
        yield
    finally:
        _batches.pending = None
    registered = {id(hook[1]) for hook in connection.run_on_commit}  # (savepoint ids, callback, robust)
    entries = [entry for entry, marker in pending if id(marker) in registered]
    if entries:
        _append(entries)


def seal() -> int:
    """Chain the entries that were stored unchained; wait for the chain if needed. Returns how many.

    Runs after the commit of a transaction that found the chain held, and from ``verify_audit``. Call it
    outside a transaction (it waits for the chain and must hold no other lock meanwhile).
    """
    with transaction.atomic():
        _lock_chain(wait=True)
        waiting = _waiting()
        _link(waiting)
        AuditEntry.objects.bulk_update(waiting, _LINK_FIELDS, batch_size=500)
    return len(waiting)


def _entry(
    *,
    when: dt.datetime,
    event: AuditEvent,
    actor: Account | None,
    subject_user: Account | None,
    ca_slug: str,
    request_sha256: str,
    serial: str,
    crl_number: int | None,
    detail: str,
) -> AuditEntry:
    return AuditEntry(
        created_at=when,
        event=event,
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        subject_user=subject_user.get_username() if subject_user is not None else "",
        ca_slug=ca_slug,
        request_sha256=request_sha256,
        serial=serial,
        crl_number=crl_number,
        detail=detail[:2000],
    )


def record(
    *,
    event: AuditEvent,
    actor: Account | None = None,
    subject_user: Account | None = None,
    ca_slug: str = "",
    request_sha256: str = "",
    serial: str = "",
    crl_number: int | None = None,
    detail: str = "",
    now: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry. ``actor`` is who did it (None: the system or the operator's command line)."""
    entry = _entry(
        when=now or utcnow(),
        event=event,
        actor=actor,
        subject_user=subject_user,
        ca_slug=ca_slug,
        request_sha256=request_sha256,
        serial=serial,
        crl_number=crl_number,
        detail=detail,
    )
    return _append([entry])[0]


@dataclass(frozen=True, kw_only=True)
class AuditItem:
    """One entry for :func:`record_many`; the fields mean what :func:`record`'s arguments mean."""

    event: AuditEvent
    actor: Account | None = None
    subject_user: Account | None = None
    ca_slug: str = ""
    request_sha256: str = ""
    serial: str = ""
    crl_number: int | None = None
    detail: str = ""


def record_many(items: Sequence[AuditItem], *, now: dt.datetime | None = None) -> None:
    """Append several entries in one statement, in the given order (bulk approval): one lock, one INSERT."""
    if not items:
        return
    when = now or utcnow()
    _append(
        [
            _entry(
                when=when,
                event=item.event,
                actor=item.actor,
                subject_user=item.subject_user,
                ca_slug=item.ca_slug,
                request_sha256=item.request_sha256,
                serial=item.serial,
                crl_number=item.crl_number,
                detail=item.detail,
            )
            for item in items
        ]
    )


# --- verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The outcome of :func:`verify_chain`: how far the chain is intact, and the first problem if any."""

    entries: int
    head_sequence: int
    head_hash: str
    bad_sequence: int | None = None
    problem: str = ""
    waiting: int = 0  # entries stored but not chained yet (being chained by another process right now)

    @property
    def intact(self) -> bool:
        return self.bad_sequence is None and not self.problem

    @property
    def summary(self) -> str:
        """One line: intact with the head to keep elsewhere, or the first problem."""
        if self.intact:
            waiting = f" ({self.waiting} more not chained yet)" if self.waiting else ""
            head = f"head #{self.head_sequence} {self.head_hash}"
            return f"audit log intact: {self.entries} entries, {head}{waiting}"
        return f"audit log NOT intact: {self.problem}"


def _walk(chunk_size: int) -> Iterator[tuple[dict[str, Any], str]]:
    rows = (
        AuditEntry.objects.filter(sequence__isnull=False)
        .order_by("sequence")
        .values_list(*HASHED_FIELDS, "entry_hash")
    )
    for row in rows.iterator(chunk_size=chunk_size):
        yield dict(zip(HASHED_FIELDS, row[:-1], strict=True)), row[-1]


def verify_chain(
    *, expect_head: str | None = None, expect_count: int | None = None, chunk_size: int = 2000
) -> ChainCheck:
    """Walk the whole chain in order of ``sequence`` (streaming, ``chunk_size`` rows at a time); read only.

    Each entry must be number previous + 1, carry a known ``hash_version``, hash to its ``entry_hash``
    and link to the previous entry's hash. ``expect_head`` (a head hash an earlier run printed) must be
    the hash of some entry, and the chain must have at least ``expect_count`` entries: that catches the
    newest entries being deleted, or the chain being rewritten, since that run.
    """
    expected_sequence, previous = 1, GENESIS_HASH
    count, head_seen = 0, expect_head is None
    wanted = (expect_head or "").strip().lower()

    def broken(sequence: int, problem: str) -> ChainCheck:
        return ChainCheck(
            entries=count,
            head_sequence=expected_sequence - 1,
            head_hash=previous,
            bad_sequence=sequence,
            problem=problem,
        )

    for values, stored_hash in _walk(chunk_size):
        sequence = int(values["sequence"])
        if sequence != expected_sequence:
            if sequence > expected_sequence:
                missing = (
                    f"#{expected_sequence}"
                    if sequence == expected_sequence + 1
                    else f"#{expected_sequence} to #{sequence - 1}"
                )
                return broken(
                    expected_sequence,
                    f"entry {missing} is missing (deleted): "
                    f"#{sequence} comes after #{expected_sequence - 1}.",
                )
            return broken(sequence, f"entry #{sequence} has a sequence number the chain cannot have.")
        try:
            computed = entry_hash(values)
        except ValueError:
            return broken(
                sequence,
                f"entry #{sequence} claims hash version {values['hash_version']!r}, which is unknown.",
            )
        if computed != stored_hash:
            return broken(
                sequence,
                f"entry #{sequence} was altered: its fields do not match its hash "
                "(an edited field, or entries swapped or renumbered).",
            )
        if values["prev_hash"] != previous:
            return broken(
                sequence,
                f"entry #{sequence} does not link to #{sequence - 1}: it was inserted, or the entry "
                f"before it was replaced (prev_hash {str(values['prev_hash'])[:16]}…, "
                f"#{sequence - 1} hashes to {previous[:16]}…).",
            )
        previous = stored_hash
        count += 1
        expected_sequence += 1
        if not head_seen and stored_hash == wanted:
            head_seen = True
    if expect_count is not None and count < expect_count:
        return broken(
            count + 1,
            f"the chain has {count} entries, fewer than the {expect_count} expected: "
            f"the newest entries (from #{count + 1}) were deleted.",
        )
    if not head_seen:
        return broken(
            count + 1,
            f"the expected head {wanted[:16]}… is not in the chain: entries up to it were deleted "
            "or the chain was rewritten since it was noted.",
        )
    waiting = AuditEntry.objects.filter(sequence__isnull=True).count()
    return ChainCheck(entries=count, head_sequence=count, head_hash=previous, waiting=waiting)
