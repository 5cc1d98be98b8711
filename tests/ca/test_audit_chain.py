"""The audit log is a hash chain: verify_audit finds every edit, insertion, deletion and reordering."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from ca import audit
from ca.models import AuditEntry, AuditEvent, CertificateAuthority, RevocationReason
from enroll import flows
from tests.conftest import make_csr

T0 = dt.datetime(2026, 11, 28, 4, 0, 0, 123456, tzinfo=dt.UTC)


def check(**kwargs: Any) -> audit.ChainCheck:
    return audit.verify_chain(**kwargs)


@pytest.fixture
def chain(db: None, alice: User) -> list[AuditEntry]:
    """Six entries of every field kind: #1 .. #6 (the fixture users record nothing themselves)."""
    AuditEntry.objects.all().delete()
    entries = [
        audit.record(event=AuditEvent.SIGN_UP, actor=alice, subject_user=alice, now=T0),
        audit.record(
            event=AuditEvent.REQUEST_SUBMITTED,
            actor=alice,
            subject_user=alice,
            request_sha256="ab" * 32,
            detail="request #1, EC P-256, Zoë's laptop ✓",
            now=T0 + dt.timedelta(seconds=1),
        ),
        audit.record(
            event=AuditEvent.CERTIFICATE_ISSUED,
            subject_user=alice,
            ca_slug="test-root",
            serial="4F1A" * 5,
            now=T0 + dt.timedelta(seconds=2),
        ),
        audit.record(event=AuditEvent.CRL_PUBLISHED, ca_slug="test-root", crl_number=1_764_302_400, now=T0),
        audit.record(
            event=AuditEvent.CERTIFICATE_REVOKED,
            actor=alice,
            ca_slug="test-root",
            serial="4F1A" * 5,
            detail="key_compromise",
            now=T0 + dt.timedelta(days=1),
        ),
        audit.record(event=AuditEvent.CRL_PUBLISHED, ca_slug="test-root", crl_number=1_764_388_800),
    ]
    return entries


def test_entries_are_numbered_and_each_links_to_the_hash_of_the_one_before(chain: list[AuditEntry]) -> None:
    stored = list(AuditEntry.objects.order_by("sequence"))
    assert [e.sequence for e in stored] == [1, 2, 3, 4, 5, 6]
    assert stored[0].prev_hash == audit.GENESIS_HASH
    for before, after in itertools.pairwise(stored):
        assert after.prev_hash == before.entry_hash
    result = check()
    assert result.intact, result.problem
    assert (result.entries, result.head_sequence, result.head_hash) == (6, 6, stored[-1].entry_hash)


def test_the_hash_is_sha256_of_canonical_json_and_the_same_on_every_database(db: None) -> None:
    AuditEntry.objects.all().delete()
    audit.record(
        event=AuditEvent.CRL_PUBLISHED,
        ca_slug="ca-ü",
        crl_number=2**40,
        detail='tab\t"quote" ✓',
        now=dt.datetime(2026, 1, 2, 5, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    )
    stored = AuditEntry.objects.get()  # read back from the database, not the object in memory
    expected = (
        '{"actor_name":"","ca_slug":"ca-\\u00fc","created_at":"2026-01-02T03:04:05.000006+00:00",'
        '"crl_number":1099511627776,"detail":"tab\\t\\"quote\\" \\u2713","event":"crl_published",'
        '"hash_version":1,"prev_hash":"' + "0" * 64 + '","request_sha256":"","sequence":1,'
        '"serial":"","subject_user":""}'
    )
    values = {name: getattr(stored, name) for name in audit.HASHED_FIELDS}
    assert audit.canonical_bytes(values) == expected.encode("ascii")
    assert stored.entry_hash == hashlib.sha256(expected.encode("ascii")).hexdigest()


def test_record_many_appends_in_the_given_order_after_single_records(chain: list[AuditEntry]) -> None:
    items = [
        audit.AuditItem(event=AuditEvent.REQUEST_APPROVED, detail=f"request #{n}", request_sha256=f"{n:064x}")
        for n in range(1000)
    ]
    audit.record_many(items, now=T0)
    audit.record_many([])
    audit.record(event=AuditEvent.CRL_PUBLISHED, ca_slug="test-root", crl_number=7)
    details = list(
        AuditEntry.objects.filter(sequence__gt=6).order_by("sequence").values_list("detail", flat=True)
    )
    assert details == [f"request #{n}" for n in range(1000)] + [""]
    result = check(chunk_size=64)
    assert result.intact, result.problem
    assert result.entries == 1007


def test_a_rolled_back_entry_leaves_no_gap(chain: list[AuditEntry]) -> None:
    def rolled_back() -> None:
        with transaction.atomic():
            audit.record(event=AuditEvent.SIGN_UP, detail="never happened")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    entry = audit.record(event=AuditEvent.SIGN_UP, detail="happened")
    assert entry.sequence == 7
    assert check().intact


def _audit_inserts(queries: Any) -> int:
    return sum('INSERT INTO "ca_auditentry"' in query["sql"] for query in queries.captured_queries)


def test_a_batch_appends_its_entries_in_order_with_one_insert_when_it_ends(chain: list[AuditEntry]) -> None:
    events = [AuditEvent.ENROLLMENT_CODE_USED, AuditEvent.REQUEST_SUBMITTED, AuditEvent.REQUEST_APPROVED]
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), audit.batch():
        for n, event in enumerate(events):
            audit.record(event=event, detail=f"step {n}", now=T0)
        with audit.batch():  # a batch inside a batch joins it
            audit.record_many([audit.AuditItem(event=AuditEvent.CERTIFICATE_ISSUED, detail="step 3")], now=T0)
        assert AuditEntry.objects.count() == 6  # nothing written before the block ends

    assert _audit_inserts(queries) == 1
    written = list(
        AuditEntry.objects.filter(sequence__gt=6).order_by("sequence").values_list("event", "detail")
    )
    assert written == [
        (event, f"step {n}") for n, event in enumerate([*events, AuditEvent.CERTIFICATE_ISSUED])
    ]
    assert check().intact


def _in_a_savepoint_rolled_back() -> None:
    with transaction.atomic():
        audit.record(event=AuditEvent.CERTIFICATE_ISSUED, detail="rolled back with its change")
        raise RuntimeError


def test_a_batch_leaves_out_the_entries_of_a_savepoint_rolled_back_and_keeps_the_rest(
    chain: list[AuditEntry],
) -> None:
    with transaction.atomic(), audit.batch():
        audit.record(event=AuditEvent.REQUEST_SUBMITTED, detail="kept before")
        with pytest.raises(RuntimeError):
            _in_a_savepoint_rolled_back()
        with transaction.atomic():
            audit.record(event=AuditEvent.REQUEST_FAILED, detail="kept: its savepoint was released")
        audit.record(event=AuditEvent.REQUEST_APPROVED, detail="kept after")

    details = list(
        AuditEntry.objects.filter(sequence__gt=6).order_by("sequence").values_list("detail", flat=True)
    )
    assert details == ["kept before", "kept: its savepoint was released", "kept after"]
    assert check().intact


def test_a_batch_that_raises_writes_nothing_and_the_next_entry_leaves_no_gap(chain: list[AuditEntry]) -> None:
    def batch_that_raises() -> None:
        with transaction.atomic(), audit.batch():
            audit.record(event=AuditEvent.REQUEST_SUBMITTED, detail="never happened")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        batch_that_raises()
    assert audit.record(event=AuditEvent.SIGN_UP, detail="happened").sequence == 7
    assert check().intact


def test_a_batch_runs_inside_a_transaction_only(transactional_db: None) -> None:
    with pytest.raises(RuntimeError, match="inside a transaction"), audit.batch():
        pass


def test_deleting_an_account_keeps_the_chain_intact(chain: list[AuditEntry], alice: User) -> None:
    alice.delete()
    assert AuditEntry.objects.filter(actor_name="alice", actor__isnull=True).count() == 3
    assert check().intact


# --- tampering ---------------------------------------------------------------------------------------


def entry(sequence: int) -> Any:
    return AuditEntry.objects.filter(sequence=sequence)


def renumber(old: int, new: int) -> None:
    entry(old).update(sequence=new)


def swap(a: int, b: int) -> None:
    renumber(a, 1000)
    renumber(b, a)
    renumber(1000, b)


def insert_forged_after(sequence: int, *, rewrite_rest: bool) -> None:
    """Make room after ``sequence`` and insert a well-formed entry there (optionally rehash the rest)."""
    after = AuditEntry.objects.filter(sequence__gt=sequence).order_by("-sequence")
    for number in list(after.values_list("sequence", flat=True)):
        assert number is not None
        renumber(number, number + 1)
    before = AuditEntry.objects.get(sequence=sequence)
    forged = AuditEntry(
        sequence=sequence + 1,
        prev_hash=before.entry_hash,
        created_at=before.created_at,
        event=AuditEvent.REQUEST_APPROVED,
        actor_name="mallory",
        detail="request #99",
    )
    forged.entry_hash = audit.entry_hash({name: getattr(forged, name) for name in audit.HASHED_FIELDS})
    forged.save(force_insert=True)
    if rewrite_rest:
        previous = forged.entry_hash
        for later in AuditEntry.objects.filter(sequence__gt=sequence + 1).order_by("sequence"):
            later.prev_hash = previous
            later.entry_hash = previous = audit.entry_hash(
                {name: getattr(later, name) for name in audit.HASHED_FIELDS}
            )
            later.save()


@dataclass(frozen=True)
class Tampering:
    name: str
    act: Callable[[], object]
    bad: int
    says: str
    anchored: bool = False  # verified against the head an earlier run printed


TAMPERINGS = [
    Tampering(
        "created_at, one microsecond",
        lambda: entry(2).update(created_at=F("created_at") + dt.timedelta(microseconds=1)),
        2,
        "#2 was altered",
    ),
    Tampering(
        "created_at of two entries swapped",
        lambda: (entry(1).update(created_at=T0 + dt.timedelta(seconds=2)), entry(3).update(created_at=T0)),
        1,
        "#1 was altered",
    ),
    Tampering("event", lambda: entry(3).update(event=AuditEvent.REQUEST_REJECTED), 3, "#3 was altered"),
    Tampering("actor_name", lambda: entry(5).update(actor_name="bob"), 5, "#5 was altered"),
    Tampering("actor_name emptied", lambda: entry(1).update(actor_name=""), 1, "#1 was altered"),
    Tampering("subject_user", lambda: entry(2).update(subject_user="bob"), 2, "#2 was altered"),
    Tampering("ca_slug", lambda: entry(4).update(ca_slug="other"), 4, "#4 was altered"),
    Tampering("request_sha256", lambda: entry(2).update(request_sha256="cd" * 32), 2, "#2 was altered"),
    Tampering("serial", lambda: entry(3).update(serial="4F1B" * 5), 3, "#3 was altered"),
    Tampering("crl_number", lambda: entry(4).update(crl_number=F("crl_number") + 1), 4, "#4 was altered"),
    Tampering("crl_number set to NULL", lambda: entry(6).update(crl_number=None), 6, "#6 was altered"),
    Tampering("detail", lambda: entry(2).update(detail="request #1, EC P-256"), 2, "#2 was altered"),
    Tampering("detail of the newest", lambda: entry(6).update(detail="x"), 6, "#6 was altered"),
    Tampering("entry_hash", lambda: entry(3).update(entry_hash="0" * 64), 3, "#3 was altered"),
    Tampering("hash_version", lambda: entry(2).update(hash_version=2), 2, "hash version 2"),
    Tampering("prev_hash", lambda: entry(4).update(prev_hash="f" * 64), 4, "#4 was altered"),
    Tampering(
        "inserted in the middle", lambda: insert_forged_after(3, rewrite_rest=False), 5, "#5 was altered"
    ),
    Tampering(
        "inserted, later entries rehashed",
        lambda: insert_forged_after(3, rewrite_rest=True),
        8,
        "not in the chain",
        anchored=True,
    ),
    Tampering("deleted in the middle", lambda: entry(3).delete(), 3, "entry #3 is missing"),
    Tampering(
        "two deleted in the middle",
        lambda: AuditEntry.objects.filter(sequence__in=[2, 3]).delete(),
        2,
        "entry #2 to #3 is missing",
    ),
    Tampering("the first deleted", lambda: entry(1).delete(), 1, "entry #1 is missing"),
    Tampering("the newest deleted", lambda: entry(6).delete(), 6, "fewer than the 6 expected", anchored=True),
    Tampering(
        "all deleted",
        lambda: AuditEntry.objects.all().delete(),
        1,
        "fewer than the 6 expected",
        anchored=True,
    ),
    Tampering("two swapped", lambda: swap(2, 4), 2, "#2 was altered"),
    Tampering("neighbours swapped", lambda: swap(5, 6), 5, "#5 was altered"),
    Tampering("renumbered past a gap", lambda: renumber(6, 9), 6, "entry #6 to #8 is missing"),
]


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=[t.name for t in TAMPERINGS])
def test_it_names_the_first_tampered_entry(chain: list[AuditEntry], tampering: Tampering) -> None:
    before = check()
    assert before.intact
    tampering.act()
    anchor = {"expect_head": before.head_hash, "expect_count": before.entries} if tampering.anchored else {}
    result = check(**anchor)
    assert not result.intact
    assert result.bad_sequence == tampering.bad, result.problem
    assert tampering.says in result.problem
    with pytest.raises(CommandError, match="audit log NOT intact") as raised:
        call_command(
            "verify_audit",
            *(["--expect-head", before.head_hash, "--expect-count", str(before.entries)] if anchor else []),
        )
    assert tampering.says in str(raised.value)


def test_without_the_earlier_head_a_deleted_newest_entry_goes_unnoticed(chain: list[AuditEntry]) -> None:
    """The documented limit: only a head kept outside the database shows the newest entries were removed."""
    before = check()
    entry(6).delete()
    assert check().intact
    assert check().entries == 5
    assert not check(expect_head=before.head_hash).intact
    assert not check(expect_count=before.entries).intact


def test_a_grown_chain_still_passes_the_earlier_head(chain: list[AuditEntry]) -> None:
    before = check()
    audit.record(event=AuditEvent.SIGN_UP)
    result = check(expect_head=before.head_hash.upper(), expect_count=before.entries)
    assert result.intact, result.problem
    assert result.entries == 7


def test_verify_audit_prints_one_line_with_the_head(chain: list[AuditEntry]) -> None:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    head = AuditEntry.objects.get(sequence=6).entry_hash
    assert out.getvalue() == f"audit log intact: 6 entries, head #6 {head}\n"
    out = StringIO()
    call_command("verify_audit", "--expect-head", head, "--expect-count", "6", stdout=out)
    assert out.getvalue().startswith("audit log intact: 6 entries")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--expect-head", "abc"], "64 hex digits"),
        (["--expect-head", "g" * 64], "64 hex digits"),
        (["--expect-count", "-3"], "number of entries"),
        (["--expect-count", "٣"], "number of entries"),
        (["--expect-count", "many"], "number of entries"),
    ],
)
def test_verify_audit_refuses_bad_anchors(chain: list[AuditEntry], args: list[str], says: str) -> None:
    with pytest.raises(CommandError, match=says):
        call_command("verify_audit", *args)


def test_an_empty_log_is_intact(db: None) -> None:
    AuditEntry.objects.all().delete()
    result = check()
    assert result.intact
    assert result.summary == f"audit log intact: 0 entries, head #0 {audit.GENESIS_HASH}"


def test_the_whole_flow_writes_a_chain_that_verifies(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    from ca.services.revocation import revoke_certificate

    issued = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk, by=admin_user)
    assert issued.certificate is not None
    revoke_certificate(certificate=issued.certificate, reason=RevocationReason.SUPERSEDED, by=alice)
    rejected = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=rejected.pk, reason="duplicate", by=admin_user)
    result = check()
    assert result.intact, result.problem
    assert result.entries == AuditEntry.objects.count() >= 8


# --- the migration -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_existing_entries_in_the_order_they_were_written() -> None:
    executor = MigrationExecutor(connection)
    before = [("ca", "0005_blocked_key_backfill")]
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(before)
        old_apps = executor.loader.project_state(before).apps
        OldEntry = old_apps.get_model("ca", "AuditEntry")
        # written out of time order: the chain follows the order of writing (primary key), not created_at
        OldEntry.objects.bulk_create(
            [
                OldEntry(created_at=T0 + dt.timedelta(seconds=-n), event="sign_up", subject_user=f"u{n}")
                for n in range(2500)
            ]
        )
        executor = MigrationExecutor(connection)
        executor.migrate(leaves)
    finally:
        MigrationExecutor(connection).migrate(leaves)
    rows = list(AuditEntry.objects.order_by("sequence").values_list("subject_user", flat=True))
    assert rows == [f"u{n}" for n in range(2500)]
    audit.record(event=AuditEvent.SIGN_UP, subject_user=None)
    result = check()
    assert result.intact, result.problem
    assert result.entries == 2501


# --- PostgreSQL: many writers at once ----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_on_postgresql_build_one_unbroken_chain(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    from ca.services.revocation import revoke_certificate
    from tests.ca.test_postgres_concurrency import run_together

    requests = [flows.submit_csr(owner=alice, data=make_csr()).pk for _ in range(4)]
    issued = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk)
    assert issued.certificate is not None
    start = AuditEntry.objects.count()
    revoked = threading.Event()

    def writer(n: int) -> int:
        for i in range(25):
            audit.record(event=AuditEvent.SIGN_UP, detail=f"writer {n} entry {i}")
        return 25

    def bulk_writer(n: int) -> int:
        for _ in range(5):
            audit.record_many(
                [audit.AuditItem(event=AuditEvent.REQUEST_APPROVED, detail=f"bulk {n}") for _ in range(40)]
            )
        return 200

    def approver(request_id: int) -> int:
        flows.approve(request_id=request_id, by=admin_user)
        return 0

    def revoker() -> int:
        assert issued.certificate is not None
        revoke_certificate(certificate=issued.certificate, reason=RevocationReason.SUPERSEDED)
        revoked.set()
        return 0

    targets: list[Callable[[], int]] = [
        *(lambda n=n: writer(n) for n in range(4)),
        *(lambda n=n: bulk_writer(n) for n in range(2)),
        *(lambda r=r: approver(r) for r in requests),
        revoker,
    ]
    results, errors = run_together(targets)
    assert errors == []
    assert revoked.is_set()
    result = check()
    assert result.intact, result.problem
    # 4 x 25 + 2 x 200 direct entries, 2 per approval (approved, issued), revocation + its CRL: at least
    assert result.entries >= start + sum(results) + 4 * 2 + 1
    assert result.entries == AuditEntry.objects.count()


@pytest.mark.postgres
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
)
@pytest.mark.django_db(transaction=True)
def test_an_entry_written_while_another_transaction_holds_the_chain_is_chained_after_its_commit() -> None:
    """The second writer neither waits inside its transaction (no deadlock) nor forks the chain."""
    AuditEntry.objects.all().delete()
    holding, release = threading.Event(), threading.Event()
    sequences_at_return: list[int | None] = []
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                audit.record(event=AuditEvent.SIGN_UP, detail="holder")
                holding.set()
                assert release.wait(30)
        except BaseException as exc:  # checked below
            errors.append(exc)
        finally:
            connection.close()

    def other() -> None:
        try:
            with transaction.atomic():
                sequences_at_return.append(audit.record(event=AuditEvent.SIGN_UP, detail="other").sequence)
        except BaseException as exc:  # checked below
            errors.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(30)
    second = threading.Thread(target=other)
    second.start()
    for _ in range(300):  # the second transaction commits its entry unchained while the first still runs
        if AuditEntry.objects.filter(detail="other", sequence__isnull=True).exists():
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the second writer's entry never committed while the chain was held")
    assert check().waiting == 1
    release.set()
    first.join(30)
    second.join(30)
    assert errors == []
    assert sequences_at_return == [None]
    assert list(AuditEntry.objects.order_by("sequence").values_list("detail", "sequence")) == [
        ("holder", 1),
        ("other", 2),
    ]
    assert check().intact
