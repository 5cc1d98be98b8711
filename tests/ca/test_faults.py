"""Faults with real components: the database connection dies during an approval, the CA passphrase is wrong,
the process is killed while it publishes a CRL. Afterwards nothing is half done and the portal carries on."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from ca import audit
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority
from ca.pki.signing import finish_certificate
from ca.services import issuance
from ca.services.keys import clear_key_cache
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.cli import ROOT, ManagePy
from tests.conftest import make_csr, signed_by

ON_POSTGRES = connection.vendor == "postgresql"


def issued_entries() -> int:
    return AuditEntry.objects.filter(event=AuditEvent.CERTIFICATE_ISSUED).count()


# --- a. the database connection drops in the middle of an approval ------------------------------------


def terminate_backend(pid: int) -> None:
    """Kill the server process of another connection (from a connection of its own); wait till it is gone."""

    def kill() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                for _ in range(100):
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
                    row = cursor.fetchone()
                    if row is not None and row[0] == 0:
                        return
                    time.sleep(0.05)
        finally:
            connection.close()

    killer = threading.Thread(target=kill)
    killer.start()
    killer.join(30)


@pytest.fixture
def connection_killed_while_signing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first certificate signed kills its own database connection first; the list gets the server pid."""
    killed: list[int] = []
    sign = finish_certificate

    def sign_after_the_connection_died(**kwargs: Any) -> x509.Certificate:
        if not killed:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                row = cursor.fetchone()
            assert row is not None
            killed.append(int(row[0]))
            terminate_backend(killed[0])
        return sign(**kwargs)

    monkeypatch.setattr(issuance, "finish_certificate", sign_after_the_connection_died)
    return killed


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL (set DATABASE_URL=postgres://...)")
@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_while_signing_leaves_no_certificate_and_a_retry_issues(
    ca: CertificateAuthority, alice: User, admin_user: User, connection_killed_while_signing: list[int]
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    entries_before = AuditEntry.objects.count()
    killed = connection_killed_while_signing

    with pytest.raises(flows.FlowError, match="database connection failed, so nothing was approved"):
        flows.approve(request_id=request.pk, by=admin_user)
    assert killed, "the signing step never ran"

    stored = EnrollmentRequest.objects.get(pk=request.pk)
    assert stored.status == RequestStatus.SUBMITTED  # the whole step rolled back: still waiting
    assert stored.certificate is None
    assert stored.decided_at is None
    assert not Certificate.objects.filter(owner=alice).exists()  # not even the reserved serial
    assert AuditEntry.objects.count() == entries_before
    assert issued_entries() == 0

    # the portal answers as usual on a new connection
    client = Client()
    client.force_login(admin_user)
    page = client.get(reverse("admin:enroll_enrollmentrequest_change", args=[request.pk]))
    assert page.status_code == 200
    assert client.get(f"/pki/{ca.slug}.crl").status_code == 200

    # and the same request is approved on a retry
    retried = flows.approve(request_id=request.pk, by=admin_user)
    assert retried.status == RequestStatus.ISSUED
    assert retried.certificate is not None
    assert Certificate.objects.filter(owner=alice).count() == 1
    assert issued_entries() == 1
    check = audit.verify_chain()
    assert check.intact, check.problem


DATABASE_LOST_SAYS = "database connection failed, so nothing was approved or issued"


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL (set DATABASE_URL=postgres://...)")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["bulk action", "approve button"])
def test_the_admin_says_the_database_connection_failed_and_the_requests_still_wait(
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    admin_user: User,
    connection_killed_while_signing: list[int],
    how: str,
) -> None:
    requests = [flows.submit_csr(owner=owner, data=make_csr()) for owner in (alice, bob)]
    client = Client()
    client.force_login(admin_user)
    if how == "bulk action":
        response = client.post(
            reverse("admin:enroll_enrollmentrequest_changelist"),
            {"action": "approve_selected", "_selected_action": [r.pk for r in requests]},
        )
    else:
        response = client.post(reverse("admin:enroll_enrollmentrequest_approve", args=[requests[0].pk]))
    assert connection_killed_while_signing, "the signing step never ran"
    assert response.status_code == 302  # not a 500: the page reconnected to report it
    said = messages_of(response)
    assert any(DATABASE_LOST_SAYS in message for message in said), said
    for request in requests:
        request.refresh_from_db()
        assert request.status == RequestStatus.SUBMITTED
        assert request.decided_at is None
    assert not Certificate.objects.exists()
    assert issued_entries() == 0
    assert client.get(reverse("admin:enroll_enrollmentrequest_changelist")).status_code == 200


# --- b. the CA passphrase is wrong --------------------------------------------------------------------

PASSPHRASE_FAULTS = [
    pytest.param("not-the-passphrase-0123", "could not be read: the passphrase is wrong", id="wrong"),
    pytest.param("", "No CA passphrase is configured", id="missing"),
]


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def assert_failed_without_certificate(request: EnrollmentRequest, says: str) -> None:
    request.refresh_from_db()
    assert request.status == RequestStatus.FAILED
    assert request.reason.startswith("Issuing failed: ")
    assert says in request.reason
    assert request.certificate is None
    assert not Certificate.objects.filter(owner=request.owner).exists()
    assert issued_entries() == 0
    failed = AuditEntry.objects.get(event=AuditEvent.REQUEST_FAILED)
    assert says in failed.detail


@pytest.mark.parametrize(("passphrase", "says"), PASSPHRASE_FAULTS)
def test_the_admin_action_reports_a_ca_key_that_cannot_be_opened(
    ca: CertificateAuthority,
    alice: User,
    admin_client: Client,
    settings: Settings,
    passphrase: str,
    says: str,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    clear_key_cache()  # as after a restart with the new setting
    settings.ENROLL_CA_PASSPHRASE = passphrase
    response = admin_client.post(
        reverse("admin:enroll_enrollmentrequest_changelist"),
        {"action": "approve_selected", "_selected_action": [request.pk]},
    )
    assert response.status_code == 302
    assert any(says in message for message in messages_of(response)), messages_of(response)
    assert_failed_without_certificate(request, says)


@pytest.mark.parametrize(("passphrase", "says"), PASSPHRASE_FAULTS)
def test_the_approve_button_reports_a_ca_key_that_cannot_be_opened(
    ca: CertificateAuthority,
    alice: User,
    admin_client: Client,
    settings: Settings,
    passphrase: str,
    says: str,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    clear_key_cache()
    settings.ENROLL_CA_PASSPHRASE = passphrase
    response = admin_client.post(reverse("admin:enroll_enrollmentrequest_approve", args=[request.pk]))
    assert response.status_code == 302
    assert any(says in message for message in messages_of(response)), messages_of(response)
    assert_failed_without_certificate(request, says)
    # the CRL endpoint keeps serving the CRL signed before (it is not due for re-signing)
    assert Client().get(f"/pki/{ca.slug}.crl").status_code == 200


@pytest.fixture(scope="module")
def installation(
    tmp_path_factory: pytest.TempPathFactory, new_installation: Callable[[Path], ManagePy]
) -> ManagePy:
    """A real installation with a CA and a submitted request #1 from 'owner', driven by manage.py."""
    folder = tmp_path_factory.mktemp("wrong-passphrase")
    cli = new_installation(folder)
    path = folder / "owner.csr"
    path.write_bytes(make_csr())
    *_, request_id = cli.batch(
        ("init_ca", "--name", "Fault CA", "--slug", "fault-ca"),
        ("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('owner')"),
        ("submit_csr", "--user", "owner", str(path)),
    )
    assert request_id == "1"
    return cli


def last_error_line(cli: ManagePy, *args: str) -> str:
    """Run a command that must fail with exit status 1 and no traceback; the last line it wrote to stderr
    (the log lines of the failure, e.g. "request #1 failed: ...", come before it)."""
    result = cli.run(*args)
    stderr = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, stderr)
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_the_approve_command_says_the_ca_key_cannot_be_opened(installation: ManagePy) -> None:
    installation.env["ENROLL_CA_PASSPHRASE"] = "not-the-passphrase-0123"
    try:
        line = last_error_line(installation, "approve", "1")
        crl_line = last_error_line(installation, "publish_crl")
    finally:
        installation.env["ENROLL_CA_PASSPHRASE"] = "end-to-end-passphrase-0123"
    assert line.startswith("CommandError: Request #1 approved, but Issuing failed:")
    assert "The CA key could not be read: the passphrase is wrong" in line
    assert crl_line.startswith(
        "CommandError: CA fault-ca: The CA key could not be read: the passphrase is wrong"
    )
    state, audit_line = installation.batch(
        (
            "shell",
            "-c",
            "from enroll.models import EnrollmentRequest as R; from ca.models import Certificate as C; "
            "r = R.objects.get(pk=1); print(r.status, C.objects.exclude(owner=None).count())",
        ),
        ("verify_audit",),
    )
    assert state == "failed 0"
    assert audit_line.startswith("audit log intact:")


# --- c. the process is killed while it publishes a CRL ------------------------------------------------

CHILD = textwrap.dedent(
    """
    import base64, datetime as dt, json, os, sys, time
    from pathlib import Path

    import django

    django.setup()

    from django.contrib.auth.models import User
    from django.test import Client

    from ca.clock import utcnow
    from ca.models import Certificate, CertificateAuthority, CrlPublication, Revocation, RevocationReason
    from ca.pki import crl as pki_crl
    from ca.pki.serials import format_serial, new_serial
    from ca.services.authorities import create_ca
    from ca.services.crl import publish_crl

    action, out = sys.argv[1], Path(sys.argv[2])

    if action == "setup":
        ca = create_ca(name="Fault CA", slug="fault-ca")
        owner = User.objects.create_user("owner")
        now = utcnow()
        for _ in range(4):  # 20,000 revoked certificates (placeholder DER, as in the benchmark)
            certificates = Certificate.objects.bulk_create(
                Certificate(
                    ca=ca, serial=format_serial(serial=new_serial()), der=b"\\x30\\x00", subject="CN=x",
                    not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=365),
                    owner=owner, fingerprint_sha256="0" * 64, spki_sha256="0" * 64, profile="client",
                    request_sha256="0" * 64, created_at=now,
                )
                for _ in range(5000)
            )
            Revocation.objects.bulk_create(
                Revocation(certificate=c, reason=RevocationReason.SUPERSEDED, revoked_at=now)
                for c in certificates
            )
        out.write_text(str(publish_crl(ca=ca).number))

    elif action == "hang":  # sign the next CRL, then stop inside the signing step until killed
        sign = pki_crl.build_crl_der

        def sign_and_hang(**kwargs):
            signed = sign(**kwargs)
            x509 = __import__("cryptography").x509
            out.write_text(str(x509.load_der_x509_crl(signed).extensions.get_extension_for_class(
                x509.CRLNumber).value.crl_number))
            time.sleep(600)
            return signed

        pki_crl.build_crl_der = sign_and_hang
        publish_crl(ca=CertificateAuthority.objects.get(slug="fault-ca"))

    elif action == "serve":  # what the public endpoint serves, and the CRLs stored
        response = Client().get("/pki/fault-ca.crl")
        out.write_text(json.dumps({
            "ca": base64.b64encode(Client().get("/pki/fault-ca.crt").content).decode(),
            "status": response.status_code,
            "der": base64.b64encode(response.content).decode(),
            "numbers": list(CrlPublication.objects.filter(ca__slug="fault-ca").order_by("number")
                            .values_list("number", flat=True)),
        }))
    """
)


@pytest.fixture
def child_env(tmp_path: Path, new_installation: Callable[[Path], ManagePy]) -> dict[str, str]:
    """The environment of a separate process on this test's database (SQLite: a migrated file database)."""
    cli = ManagePy(tmp_path) if ON_POSTGRES else new_installation(tmp_path)
    env = {**cli.env, "DJANGO_ALLOWED_HOSTS": "testserver", "PYTHONPATH": str(ROOT)}
    if ON_POSTGRES:
        base = urlsplit(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(base._replace(path="/" + str(connection.settings_dict["NAME"])))
    return env


def child(env: dict[str, str], tmp_path: Path, action: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "crl_child.py"
    script.write_text(CHILD)
    out = tmp_path / f"{action}.out"
    out.unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script), action, str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(env: dict[str, str], tmp_path: Path, action: str) -> str:
    process = child(env, tmp_path, action)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr.decode()
    return (tmp_path / f"{action}.out").read_text()


@dataclass(frozen=True)
class Served:
    number: int
    crl: x509.CertificateRevocationList
    stored: list[int]  # the numbers of the CRLs in the database
    issuer: x509.Certificate  # the CA certificate the portal serves


def served(env: dict[str, str], tmp_path: Path) -> Served:
    """What the public CRL endpoint of a separate process answers now."""
    answer = json.loads(finish(env, tmp_path, "serve"))
    assert answer["status"] == 200
    crl = x509.load_der_x509_crl(base64.b64decode(answer["der"]))
    return Served(
        number=crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number,
        crl=crl,
        stored=answer["numbers"],
        issuer=x509.load_der_x509_certificate(base64.b64decode(answer["ca"])),
    )


@pytest.mark.django_db(transaction=True)  # runs in both passes: a SQLite file database, then PostgreSQL
def test_a_process_killed_while_signing_a_crl_leaves_the_old_crl_served_and_the_next_one_higher(
    child_env: dict[str, str], tmp_path: Path
) -> None:
    published = int(finish(child_env, tmp_path, "setup"))

    hanging = child(child_env, tmp_path, "hang")
    ready = tmp_path / "hang.out"
    for _ in range(1200):
        if (ready.exists() and ready.read_text()) or hanging.poll() is not None:
            break
        time.sleep(0.05)
    assert hanging.poll() is None, hanging.communicate()[1].decode()
    signed_number = int(ready.read_text())
    assert signed_number > published

    # while it hangs (holding the CA row lock / the SQLite write lock), the old CRL is served
    assert served(child_env, tmp_path).number == published

    hanging.send_signal(signal.SIGKILL)
    hanging.communicate(timeout=30)
    assert hanging.returncode == -signal.SIGKILL

    before = served(child_env, tmp_path)
    assert before.number == published  # the same CRL as before, not the one signed and lost
    assert before.stored[-1] == published
    assert signed_by(before.crl, before.issuer)
    assert len(before.crl) == 20_000

    started = time.monotonic()
    cli = ManagePy(tmp_path)
    cli.env = child_env
    next_number = int(cli.ok("publish_crl", "--ca", "fault-ca"))
    took = time.monotonic() - started
    assert next_number > signed_number > published
    after = served(child_env, tmp_path)
    assert after.number == next_number
    assert signed_by(after.crl, after.issuer)
    assert len(after.crl) == 20_000
    assert after.issuer == before.issuer
    assert cli.ok("verify_audit").startswith("audit log intact:")
    print(f"after SIGKILL: next CRL #{next_number} (lost one #{signed_number}) published in {took:.1f} s")


# --- restoring an older backup (docs/OPERATIONS.md, "Backup and restore") -----------------------------------


def test_restoring_an_older_backup_keeps_crl_numbers_rising_and_loses_what_came_after(
    tmp_path: Path, new_installation: Callable[[Path], ManagePy]
) -> None:
    cli = new_installation(tmp_path)
    database = cli.database
    for name in ("before", "after"):
        (tmp_path / f"{name}.csr").write_bytes(make_csr())
    *_, before = cli.batch(  # the set-up in one process: the restored installation's commands run alone
        ("init_ca", "--name", "Restore CA", "--slug", "restore-ca"),
        ("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('owner')"),
        ("submit_csr", "--user", "owner", str(tmp_path / "before.csr")),
    )
    kept = cli.ok("approve", before)

    backup = tmp_path / "backup.sqlite3"  # a consistent copy of the live database (sqlite3 .backup)
    with sqlite3.connect(database) as source, sqlite3.connect(backup) as target:
        source.backup(target)

    lost = cli.ok("approve", cli.ok("submit_csr", "--user", "owner", str(tmp_path / "after.csr")))
    _, newest_line, anchor = cli.batch(
        ("revoke", kept, "--reason", "key_compromise"),
        ("publish_crl", "--ca", "restore-ca"),
        ("verify_audit",),  # "audit log intact: N entries, head #N HASH", kept elsewhere
    )
    newest = int(newest_line)
    count, head = anchor.split()[3], anchor.split()[-1]

    for suffix in ("", "-wal", "-shm"):  # restore: the service is stopped, the old file put back
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)
    # The numbers published since the backup are gone with it, and no front server reported one (none is
    # registered): what keeps the next number above them is the clock alone (docs/OPERATIONS.md: never
    # lower than the Unix time in milliseconds). Each command above published its CRLs within its own
    # process, well under one per millisecond, and the next command starts a new process later still.

    assert cli.refused("revoke", lost, "--reason", "key_compromise").strip() == (
        f"CommandError: No certificate with serial {lost} was issued here."
    )
    assert int(cli.ok("publish_crl", "--ca", "restore-ca")) > newest
    assert cli.ok("verify_audit").startswith("audit log intact:")
    assert "not in the chain" in cli.refused("verify_audit", "--expect-head", head)
    assert "fewer than the" in cli.refused("verify_audit", "--expect-count", count)
    # the revocation made after the backup is gone: it must be made again
    assert cli.ok("revoke", kept, "--reason", "key_compromise").isdigit()
