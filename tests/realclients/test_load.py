"""Load and faults: two portal instances (gunicorn) behind one nginx, on a PostgreSQL database of their own.

For :data:`LOAD_SECONDS` (``ENROLL_LOAD_SECONDS`` shortens it locally) :data:`PEOPLE` people at once, each
with their own cookies, go through nginx: sign up, confirm the e-mail address with the link the portal mailed
(a file per message, sent by the mail worker, ``manage.py db_worker``), submit a CSR, wait for the
administrator, download the certificate and revoke it on the self-revocation page; then the next person. An
administrator, logged in through nginx too, approves the pending requests in batches with the changelist
action "Approve selected requests", and the CRL is fetched from each instance directly all the while.

Afterwards: no answer 5xx anywhere (clients, both gunicorn access logs, nginx's), every step answered as a
browser expects, no duplicate serial, CRL numbers strictly increasing in publication order, every revoked
serial on the newest CRL that both instances serve (signature checked with the CA certificate), the audit
chain verifies (``manage.py verify_audit``), and at least :data:`MIN_CYCLES` people got through the whole
cycle. The counts and requests per second are printed (``pytest -s``).

Rate limits and the login lock-out are turned off for the live processes: every client here is 127.0.0.1.
"""

from __future__ import annotations

import collections
import contextlib
import email
import email.policy
import itertools
import math
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection

from tests.cli import ROOT, ManagePy
from tests.conftest import make_csr, need_program, signed_by
from tests.harness.gunicorn import PortalInstance
from tests.harness.nginx import NginxBalancer
from tests.harness.process import free_port
from tests.harness.webclient import WebAnswer, WebClient

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.real_client,
    pytest.mark.real_server,
    pytest.mark.timed,  # its figures: runs alone (tests/conftest.py)
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
    ),
]

#: How long people keep starting new cycles, in seconds (ENROLL_LOAD_SECONDS may shorten it, not lengthen).
LOAD_SECONDS = 60.0
#: How long cycles under way may take to finish after that.
FINISH_SECONDS = 60.0
#: People at once (threads), each going through one cycle after another.
PEOPLE = 8
#: Full cycles (sign-up to revocation) a run of LOAD_SECONDS must complete at least; scaled for shorter runs.
MIN_CYCLES = 20
#: The administrator looks for pending requests this often, in seconds.
ADMIN_PAUSE = 0.5
#: A person looks at their pending request this often, in seconds.
POLL_PAUSE = 0.3
#: Each CRL fetcher waits this long between fetches, in seconds.
CRL_PAUSE = 0.05
#: How long a portal process may go on serving the CRL it read before another process published a newer
#: one (each caches the newest CRL for a fraction of a second); also the pause before the final CRL check.
STALE_SECONDS = 2.0
#: Portal instances behind nginx, and gunicorn workers and threads of each.
INSTANCES, WORKERS, THREADS = 2, 2, 2

ADMIN_NAME = "loadadmin"
ADMIN_PASSWORD = "load-admin-" + secrets.token_urlsafe(12)
CHANGELIST = "/admin/enroll/enrollmentrequest/?status__exact=submitted"
VERIFY_LINK = re.compile(r"https?://[^\s/]+(/accounts/verify/[^\s/]+/)")
SELECTED = re.compile(r'name="_selected_action" value="(\d+)"')
CERTIFICATE_LINK = re.compile(r'href="/certificates/(\d+)/"')
REQUEST_PATH = re.compile(r"^/requests/(\d+)/$")
#: An error message on an admin page (a request of the batch got no certificate, or was not approved).
ADMIN_ERROR = re.compile(r'<li class="error">(.*?)</li>', re.DOTALL)
REVOKED_AND_PUBLISHED = "It is on the published revocation list now"


def load_seconds() -> float:
    configured = os.environ.get("ENROLL_LOAD_SECONDS", "")
    if not configured:
        return LOAD_SECONDS
    seconds = float(configured)
    assert seconds > 0, f"ENROLL_LOAD_SECONDS={configured} must be a positive number of seconds"
    return min(seconds, LOAD_SECONDS)


# --- the live installation --------------------------------------------------------------------------------


@dataclass
class Site:
    """A fresh database, a CA, an administrator, two portal instances and nginx in front of them."""

    manage: ManagePy
    database_url: str
    slug: str
    mail_dir: Path
    instances: list[PortalInstance]
    balancer: NginxBalancer


def _database(url: str, name: str) -> str:
    """``url`` with the database ``name``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need_program("nginx")
    need_program("gunicorn")
    server_url = os.environ["DATABASE_URL"]
    name = f"enroll_load_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    folder = tmp_path_factory.mktemp("load")
    mail_dir = folder / "mail"
    mail_dir.mkdir()
    (folder / "data" / "static").mkdir(parents=True)  # STATIC_ROOT: whitenoise warns when it is missing
    balancer_port = free_port()
    manage = ManagePy(folder)
    manage.env.update(
        DJANGO_SETTINGS_MODULE="tests.load_settings",
        DATABASE_URL=_database(server_url, name),
        ENROLL_PUBLIC_URL=f"http://127.0.0.1:{balancer_port}",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        ENROLL_LOAD_MAIL_DIR=str(mail_dir),
        # Every load client is 127.0.0.1: rate limits and the login lock-out would stop the load.
        ENROLL_RATE_LIMITS_ENABLED="false",
        ENROLL_LOCKOUT_ENABLED="false",
        # Plain HTTP on loopback: no redirect to HTTPS. nginx in front is the trusted proxy.
        ENROLL_HTTPS="false",
        ENROLL_TRUSTED_PROXIES="127.0.0.1",
        DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    with contextlib.ExitStack() as stack:

        @stack.callback
        def drop_database() -> None:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        manage.ok("migrate", "--noinput")
        slug = manage.ok("init_ca", "--name", "Load Test Client CA", "--default")
        manage.ok(
            "createsuperuser", "--noinput", "--username", ADMIN_NAME, "--email", "loadadmin@example.com"
        )
        instances = [
            stack.enter_context(
                PortalInstance(folder / f"portal{i}", env=manage.env, workers=WORKERS, threads=THREADS)
            )
            for i in range(INSTANCES)
        ]
        # The mail worker, as production runs it beside the portal (docs/MAIL.md), polling every 0.1 s.
        worker_log = stack.enter_context((folder / "db_worker.log").open("wb"))
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "db_worker", "--no-reload", "--interval", "0.1"],
            cwd=ROOT,
            env=manage.env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )

        @stack.callback
        def stop_worker() -> None:
            worker.terminate()
            worker.wait(timeout=30)

        balancer = stack.enter_context(
            NginxBalancer(
                folder / "nginx", upstreams=[f"127.0.0.1:{i.port}" for i in instances], port=balancer_port
            )
        )
        yield Site(manage, manage.env["DATABASE_URL"], slug, mail_dir, instances, balancer)


# --- what happened -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Every answer's status, the counts of finished steps, and every surprise (shared by all threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    steps: collections.Counter[str] = field(default_factory=collections.Counter)
    surprises: list[str] = field(default_factory=list)
    issued_serials: list[int] = field(default_factory=list)
    revoked_serials: set[int] = field(default_factory=set)

    def answer(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status >= 500 or status == 0:
                self.server_errors.append(f"{status} {method} {path}")

    def done(self, step: str, amount: int = 1) -> None:
        with self.lock:
            self.steps[step] += amount

    def surprise(self, text: str) -> None:
        with self.lock:
            self.surprises.append(text)


class Surprise(Exception):
    """A step did not answer as a browser expects; the person gives up this cycle."""


def expect(answer: WebAnswer, status: int, what: str) -> WebAnswer:
    if answer.status != status:
        raise Surprise(f"{what}: {answer.status} instead of {status}: {answer.text[:300]!r}")
    return answer


class Mailbox:
    """The verification links the portal mailed, by address, read from the file mail backend's folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.read: set[str] = set()
        self.links: dict[str, str] = {}

    def _scan(self) -> None:
        for path in sorted(self.folder.iterdir()):
            if path.name in self.read:
                continue
            data = path.read_bytes()
            # One file per connection; a message ends with a line of 79 dashes. Unfinished: next time.
            if not data.endswith(b"-" * 79 + b"\n"):
                continue
            self.read.add(path.name)
            for part in data.split(b"\n" + b"-" * 79 + b"\n"):
                if not part.strip():
                    continue
                message = email.message_from_bytes(part, policy=email.policy.default)
                body = message.get_body(("plain",))
                found = VERIFY_LINK.search(body.get_content()) if body is not None else None
                if found is not None:
                    self.links[str(message["To"])] = found.group(1)

    def link(self, address: str, *, until: float) -> str:
        """The path of the verification link mailed to ``address`` (waits for it until ``until``)."""
        while time.monotonic() < until:
            with self.lock:
                self._scan()
                if address in self.links:
                    return self.links.pop(address)
            time.sleep(0.1)
        raise Surprise(f"no verification e-mail to {address}")


# --- the people, the administrator and the CRL fetchers ---------------------------------------------------


@dataclass
class Run:
    site: Site
    tally: Tally
    mailbox: Mailbox
    stop_starting: float  # monotonic time: no new cycle after it
    give_up: float  # monotonic time: cycles under way end here
    people_done: threading.Event = field(default_factory=threading.Event)
    names: Iterator[int] = field(default_factory=itertools.count)

    def client(self, base: str | None = None) -> WebClient:
        return WebClient(base or self.site.balancer.url, on_answer=self.tally.answer)


def one_cycle(run: Run) -> None:
    """Sign up, verify, submit, wait for approval, download, revoke: one new person, through nginx."""
    tally = run.tally
    name = f"load{next(run.names):05d}"
    address = f"{name}@example.com"
    password = f"Load-{secrets.token_urlsafe(9)}"
    client = run.client()
    try:
        expect(client.get("/accounts/signup/"), 200, "sign-up page")
        form: dict[str, str | list[str]] = {
            "username": name,
            "email": address,
            "password1": password,
            "password2": password,
        }
        expect(client.post("/accounts/signup/", form), 302, "sign-up")
        tally.done("sign-ups")

        link = run.mailbox.link(address, until=run.give_up)
        expect(client.get(link), 200, "verification page")
        expect(client.post(link, {}), 302, "verification button")
        tally.done("verifications")

        key = ec.generate_private_key(ec.SECP256R1())
        expect(client.get("/requests/new/"), 200, "new request page")
        submitted = expect(client.post("/requests/new/", {"csr_text": make_csr(key).decode()}), 302, "CSR")
        found = REQUEST_PATH.match(submitted.location)
        if found is None:
            raise Surprise(f"the CSR submission led to {submitted.location!r}, not a request page")
        tally.done("submissions")

        certificate_id = None
        while certificate_id is None:
            page = expect(client.get(submitted.location), 200, "request page")
            if (link_found := CERTIFICATE_LINK.search(page.text)) is not None:
                certificate_id = link_found.group(1)
            elif time.monotonic() > run.give_up:
                raise Surprise(f"request {found.group(1)} of {name} was not decided in time")
            else:
                time.sleep(POLL_PAUSE)

        pem = expect(client.get(f"/certificates/{certificate_id}/download/pem/"), 200, "PEM download").body
        certificate = x509.load_pem_x509_certificate(pem)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise Surprise(f"certificate {certificate_id} of {name} is not for the key of the request")
        with tally.lock:
            tally.issued_serials.append(certificate.serial_number)
        tally.done("downloads")

        revoke_page = f"/certificates/{certificate_id}/revoke/"
        expect(client.get(revoke_page), 200, "revocation page")
        revoked = expect(client.post(revoke_page, {"reason": "superseded", "confirm": "on"}), 302, "revoke")
        detail = expect(client.get(revoked.location), 200, "certificate page after revoking")
        if REVOKED_AND_PUBLISHED not in detail.text:
            raise Surprise(f"revoking certificate {certificate_id} did not say the CRL was published")
        with tally.lock:
            tally.revoked_serials.add(certificate.serial_number)
        tally.done("revocations")
        tally.done("cycles")
    finally:
        client.close()


def person(run: Run) -> None:
    while time.monotonic() < run.stop_starting:
        try:
            one_cycle(run)
        except Surprise as surprise:
            run.tally.surprise(str(surprise))
        except (
            OSError,
            HTTPException,
            ValueError,
        ) as exc:  # connection errors (counted as status 0), unparsable PEM
            run.tally.surprise(f"{type(exc).__name__}: {exc}")


def administrator(run: Run) -> None:
    """Log in through nginx; approve whatever is pending, in batches, until every person has finished."""
    client = run.client()
    try:
        expect(client.get("/admin/login/"), 200, "admin login page")
        login = {"username": ADMIN_NAME, "password": ADMIN_PASSWORD, "next": "/admin/"}
        expect(client.post("/admin/login/?next=/admin/", login), 302, "admin login")
        while not run.people_done.is_set():
            try:
                approve_pending(run, client)
            except (Surprise, OSError, HTTPException) as exc:  # noted; the administrator tries again
                run.tally.surprise(f"administrator: {type(exc).__name__}: {exc}")
                time.sleep(ADMIN_PAUSE)
    except (Surprise, OSError, HTTPException) as exc:
        run.tally.surprise(f"administrator could not log in: {type(exc).__name__}: {exc}")
    finally:
        client.close()


def approve_pending(run: Run, client: WebClient) -> None:
    """One look at the pending requests; approve them all with the changelist action, if there are any."""
    page = expect(client.get(CHANGELIST), 200, "pending requests")
    pending = SELECTED.findall(page.text)
    if not pending:
        time.sleep(ADMIN_PAUSE)
        return
    action = {"action": "approve_selected", "_selected_action": pending, "index": "0", "select_across": "0"}
    answer = expect(client.post(CHANGELIST, action), 302, f"Approve selected requests {pending}")
    run.tally.done("approvals", len(pending))
    run.tally.done("approval batches")
    # Back on the list: the messages about this batch.
    page = expect(client.get(answer.location), 200, "pending requests after approving")
    for error in ADMIN_ERROR.findall(page.text):
        run.tally.surprise(f"approving {pending}: {error.strip()}")


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def crl_fetcher(run: Run, instance: PortalInstance) -> None:
    """Fetch the CRL from one instance directly until the people are done, on a new connection each time
    (as a sync job does), so any worker answers. Once a CRL was served, an older one may still come from
    another worker only for :data:`STALE_SECONDS`."""
    client = run.client(instance.url)
    highest, highest_seen = 0, 0.0
    try:
        while not run.people_done.is_set():
            answer = expect(client.get(f"/pki/{run.site.slug}.crl"), 200, f"CRL from {instance.url}")
            client.close()
            number = crl_number(x509.load_der_x509_crl(answer.body))
            now = time.monotonic()
            if number > highest:
                highest, highest_seen = number, now
            elif number < highest:
                run.tally.done("older CRL answers")
                if now - highest_seen > STALE_SECONDS:
                    run.tally.surprise(
                        f"{instance.url} served CRL #{number} {now - highest_seen:.1f} s after #{highest}"
                    )
            run.tally.done("CRL fetches")
            time.sleep(CRL_PAUSE)
    except (Surprise, OSError, HTTPException, ValueError) as exc:
        run.tally.surprise(f"CRL fetcher of {instance.url}: {type(exc).__name__}: {exc}")
    finally:
        client.close()


def run_together(run: Run) -> float:
    """Start everybody; return the seconds until the last person finished."""
    started = time.monotonic()

    def thread(target: Callable[..., None], *args: object) -> threading.Thread:
        return threading.Thread(target=target, args=(run, *args), daemon=True)

    people = [thread(person) for _ in range(PEOPLE)]
    helpers = [thread(administrator)] + [thread(crl_fetcher, i) for i in run.site.instances]
    for t in helpers + people:
        t.start()
    for t in people:
        t.join(timeout=max(1.0, run.give_up - time.monotonic() + 30))
    elapsed = time.monotonic() - started
    run.people_done.set()
    for t in helpers:
        t.join(timeout=30)
    hung = [t.name for t in people + helpers if t.is_alive()]
    assert not hung, f"threads did not finish (a request hung?): {hung}"
    return elapsed


# --- the checks afterwards ---------------------------------------------------------------------------------


def query(site: Site, sql: LiteralString, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(site.database_url) as db:
        return db.execute(sql, params).fetchall()


def newest_crls(
    site: Site, instance: PortalInstance, *, fetches: int = 4
) -> list[x509.CertificateRevocationList]:
    """The CRL ``instance`` serves, fetched ``fetches`` times on fresh connections (so that more than one of
    its workers, each with its own cache, is likely to answer)."""
    crls = []
    for _ in range(fetches):
        client = WebClient(instance.url)
        try:
            answer = expect(
                client.get(f"/pki/{site.slug}.crl"), 200, f"CRL from {instance.url} after the run"
            )
        finally:
            client.close()
        crls.append(x509.load_der_x509_crl(answer.body))
    return crls


def test_two_instances_behind_nginx_stay_consistent_under_load(site: Site) -> None:
    seconds = load_seconds()
    now = time.monotonic()
    tally = Tally()
    run = Run(
        site,
        tally,
        Mailbox(site.mail_dir),
        stop_starting=now + seconds,
        give_up=now + seconds + FINISH_SECONDS,
    )
    elapsed = run_together(run)

    requests = sum(tally.statuses.values())
    print(
        f"\nload: {PEOPLE} people, {INSTANCES} instances x {WORKERS} workers x {THREADS} threads, "
        f"{elapsed:.1f} s"
    )
    for step in (
        "sign-ups",
        "verifications",
        "submissions",
        "approvals",
        "approval batches",
        "downloads",
        "revocations",
        "cycles",
        "CRL fetches",
        "older CRL answers",
    ):
        print(f"  {step}: {tally.steps[step]}")
    print(
        f"  requests: {requests} ({requests / elapsed:.1f}/s), "
        f"statuses: {dict(sorted(tally.statuses.items()))}"
    )
    print(f"  full cycles: {tally.steps['cycles'] / elapsed * 60:.1f}/min")

    # No 5xx (nor a dropped connection) anywhere: the clients, each instance, nginx.
    causes = [cause for instance in site.instances for cause in instance.server_errors()]
    assert not tally.server_errors, (
        f"{len(tally.server_errors)} server errors: {tally.server_errors[:20]}; "
        f"the portal logged: {causes[:20]}"
    )
    for instance in site.instances:
        bad = [status for status in instance.statuses() if status >= 500]
        assert not bad, f"gunicorn on {instance.url} answered {bad}: {instance.server_errors()[:20]}"
    logged = site.balancer.access_log()
    bad_lines = [line for line in logged if line.status >= 500]
    assert not bad_lines, f"nginx answered 5xx: {bad_lines[:20]}"
    # Round robin: both instances did their share.
    upstreams = collections.Counter(line.upstream for line in logged)
    print(f"  through nginx: {sum(upstreams.values())} answers, by instance {dict(upstreams)}")
    for instance in site.instances:
        assert upstreams[f"127.0.0.1:{instance.port}"] > len(logged) / (4 * INSTANCES), upstreams

    # Every step answered as a browser expects.
    assert not tally.surprises, f"{len(tally.surprises)} surprises: {tally.surprises[:20]}"

    # No duplicate serial, in the database or among the downloads; no request left failed.
    duplicates = query(
        site, "SELECT ca_id, serial, count(*) FROM ca_certificate GROUP BY ca_id, serial HAVING count(*) > 1"
    )
    assert not duplicates, f"duplicate serials: {duplicates}"
    assert len(set(tally.issued_serials)) == len(tally.issued_serials), "a serial was downloaded twice"
    failed = query(site, "SELECT id, reason FROM enroll_enrollmentrequest WHERE status = 'failed'")
    assert not failed, f"requests failed after approval: {failed}"

    # CRL numbers strictly increasing in publication order.
    published = query(site, "SELECT ca_id, number FROM ca_crlpublication ORDER BY id")
    numbers: dict[object, list[int]] = collections.defaultdict(list)
    for ca_id, number in published:
        assert isinstance(number, int)
        numbers[ca_id].append(number)
    for ca_id, sequence in numbers.items():
        backwards = [(a, b) for a, b in itertools.pairwise(sequence) if b <= a]
        assert not backwards, (
            f"CA {ca_id}: CRL numbers not strictly increasing in publication order: {backwards}"
        )
    print(f"  CRLs published: {len(published)}")

    # Every revoked serial is on the newest CRL, as each instance serves it, signed by the CA.
    [(ca_der, newest)] = query(
        site,
        "SELECT a.certificate_der, max(p.number) FROM ca_certificateauthority a "
        "JOIN ca_crlpublication p ON p.ca_id = a.id WHERE a.slug = %s GROUP BY a.id",
        site.slug,
    )
    assert isinstance(ca_der, bytes)
    ca_certificate = x509.load_der_x509_certificate(ca_der)
    revoked_in_db = {
        int(str(serial), 16)
        for (serial,) in query(
            site, "SELECT c.serial FROM ca_revocation r JOIN ca_certificate c ON c.id = r.certificate_id"
        )
    }
    assert tally.revoked_serials <= revoked_in_db
    time.sleep(STALE_SECONDS)  # every process has read the newest CRL by now
    served = set()
    for instance in site.instances:
        for crl in newest_crls(site, instance):
            assert signed_by(crl, ca_certificate), f"the CRL from {instance.url} does not verify with the CA"
            assert crl_number(crl) == newest, (
                f"{instance.url} serves CRL #{crl_number(crl)}, newest is #{newest}"
            )
            listed = {entry.serial_number for entry in crl}
            missing = revoked_in_db - listed
            assert not missing, f"{instance.url}: {len(missing)} revoked serials not on CRL #{newest}"
            served.add(crl.public_bytes(serialization.Encoding.DER))
    assert len(served) == 1, "the instances serve different CRLs with the same number"

    # The audit chain verifies.
    audit = site.manage.run("verify_audit")
    assert audit.returncode == 0, (
        f"manage.py verify_audit exited {audit.returncode}: {audit.stdout.decode()} {audit.stderr.decode()}"
    )

    # It did something: a floor of full cycles, scaled when ENROLL_LOAD_SECONDS shortened the run.
    floor = max(1, math.ceil(MIN_CYCLES * seconds / LOAD_SECONDS))
    assert tally.steps["cycles"] >= floor, f"only {tally.steps['cycles']} full cycles in {seconds:.0f} s"
