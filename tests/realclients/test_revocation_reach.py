"""Revocation reach (issue 18): with ``enroll-crl-sync --every 2 --node NAME --token-file FILE`` running as
a service beside a real nginx, Apache and node, a revoked client is refused by a new TLS handshake within
5 s of the click (median of 5 runs, measured at the client). Only signed install reports count: after
the runs each node is green; a node whose reload fails is red, its error shown to staff only; an
anonymous ``X-Enroll-Node`` header changes nothing.

The portal is pytest-django's live server; the servers are the harness's (configured as the generated
configurations are: one CRL per CA, the sync's reload command per server, node's file watch at 500 ms).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.live_server_helper import LiveServer

from accounts.services import mark_email_verified
from ca.models import CertificateAuthority
from ca.services import frontservers
from ca.services.crl import current_crl
from ca.services.propagation import CrlColor, NodeState, crl_healths
from tests.harness.crlsync import CrlSyncService, Reach, reach_seconds
from tests.harness.front import FrontServer
from tests.harness.portal import (
    IssuedClient,
    crl_urls,
    issue_client,
    revoke,
    run_crl_sync,
    serve_chain,
)
from tests.harness.process import WAIT_SECONDS, started_in

pytestmark = [
    pytest.mark.real_client,
    pytest.mark.real_server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("chain_kind", ["intermediate"]),
]

#: The issue's target: a revoked client refused within this many seconds of the click (median).
TARGET_SECONDS = 5.0
RUNS = 5
EVERY = 2.0


@pytest.fixture
def sync_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., CrlSyncService]]:
    """Start ``enroll-crl-sync`` services (:class:`CrlSyncService`); every one is stopped at the end."""
    yield from started_in(tmp_path_factory, CrlSyncService, "crlsync")


def a_user(name: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", f"{name}-password-123")
    mark_email_verified(user)
    return user


def let_in(server: FrontServer[Any], client: IssuedClient) -> None:
    answer = server.get(client)
    assert answer.status == 200, answer
    assert "verify=SUCCESS " in answer.text, answer


def wait_for(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(0.1)


def node_states(node: str) -> dict[str, NodeState]:
    """``node``'s state for every CA it carries, by slug."""
    return {h.ca.slug: n.state for h in crl_healths() for n in h.nodes if n.node == node}


def all_current(node: str, chain: list[CertificateAuthority]) -> bool:
    states = node_states(node)
    return [states.get(ca.slug) for ca in chain] == [NodeState.CURRENT] * len(chain)


@pytest.mark.timed  # runs alone (tests/conftest.py)
@pytest.mark.parametrize("kind", ["nginx", "apache", "node"])
def test_a_revoked_client_is_refused_within_5_s_of_the_click(
    kind: str,
    request: pytest.FixtureRequest,
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    chain_ca_file: Path,
    sync_factory: Callable[..., CrlSyncService],
    tmp_path: Path,
) -> None:
    options = {"watch_interval": 0.5} if kind == "node" else {}  # the generated node.js polls every 500 ms
    server = serve_chain(request.getfixturevalue(f"{kind}_factory"), chain, **options)
    node = f"{kind}-1"
    _registered, token = frontservers.register(name=node, actor="test")
    sync_factory(
        urls=crl_urls(live_server.url, chain),
        ca_file=chain_ca_file,
        output=server.crl_path,
        node=node,
        token=token,
        every=EVERY,
        reload_command=None if kind == "node" else server.reload_command,
    )
    wait_for(lambda: all_current(node, chain), f"{node}'s first report")
    bystander = issue_client(a_user("bystander"), tmp_path)

    seconds = []
    for run in range(RUNS):
        client = issue_client(a_user(f"user{run}"), tmp_path)
        let_in(server, client)  # a fresh, valid certificate is accepted
        seconds.append(reach_seconds(partial(server.get, client), partial(revoke, client.certificate)))
        # The next click finds the server settled: a reload (or graceful restart) finished.
        time.sleep(0.5)
    reach = Reach(seconds)
    print(f"\n{kind}: a revoked client refused {reach}")

    assert reach.median <= TARGET_SECONDS, f"{kind}: {reach}"
    let_in(server, bystander)  # the refusals were revocations, not a server refusing everyone
    # Its signed reports were accepted: green for every CA of the chain, at the newest CRL.
    wait_for(lambda: all_current(node, chain), f"{node} to report the newest CRLs", seconds=2 * EVERY + 5)
    for health in crl_healths(cas=chain):
        (mine,) = [n for n in health.nodes if n.node == node]
        assert mine.color is CrlColor.GREEN
        assert health.crl is not None
        assert mine.number == health.crl.number


def test_a_node_whose_reload_fails_is_red_with_its_error_for_staff_only(
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    chain_ca_file: Path,
    alice_client: IssuedClient,
    admin_user: User,
    sync_factory: Callable[..., CrlSyncService],
    tmp_path: Path,
) -> None:
    """The case the fetch records got wrong: the reload fails, the old bundle is put back, and the node
    must show behind (red, "its last run failed"), not current."""
    output = tmp_path / "front" / "client-crl.pem"
    output.parent.mkdir()
    urls = crl_urls(live_server.url, chain)
    first = run_crl_sync(urls=urls, ca_file=chain_ca_file, output=output)  # the bootstrap: no reload
    assert first.returncode == 0, first.stderr
    _registered, token = frontservers.register(name="broken-1", actor="test")
    sync = sync_factory(
        urls=urls,
        ca_file=chain_ca_file,
        output=output,
        node="broken-1",
        token=token,
        every=EVERY,
        reload_command="false",
    )
    wait_for(lambda: all_current("broken-1", chain), "broken-1's first report")
    installed = output.read_bytes()

    revoke(alice_client.certificate)
    wait_for(lambda: node_states("broken-1").get(chain[-1].slug) is NodeState.FAILED, "the failed report")

    assert output.read_bytes() == installed  # the previous bundle was put back
    assert "reload command failed" in sync.log()
    (issuing,) = [h for h in crl_healths(cas=chain[-1:])]
    (broken,) = issuing.nodes
    assert broken.color is CrlColor.RED
    assert issuing.crl is not None
    assert broken.number is not None
    assert broken.number < issuing.crl.number  # behind: what it reported installed, not what it fetched

    anonymous = Client().get("/pki/health.json")
    assert anonymous.status_code == 503
    shown = [n for a in anonymous.json()["authorities"] for n in a["nodes"] if n["node"] == "broken-1"]
    assert shown
    assert all(n["colour"] == "red" and "error" not in n for n in shown)
    staff = Client()
    staff.force_login(admin_user)
    as_staff = staff.get("/pki/health.json").json()
    errors = [
        n.get("error", "") for a in as_staff["authorities"] for n in a["nodes"] if n["node"] == "broken-1"
    ]
    assert any("reload command failed" in error for error in errors), errors


def test_an_anonymous_x_enroll_node_header_changes_nothing(
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
) -> None:
    """Real GETs of the CRL naming a registered node and a made-up one: neither appears nor moves."""
    frontservers.register(name="web1", actor="test")
    before = json.dumps(Client().get("/pki/health.json").json()["authorities"], sort_keys=True)
    revoke(alice_client.certificate)
    newest = current_crl(ca=chain[-1]).number
    for name in ("web1", "ghost-1"):
        for url in crl_urls(live_server.url, chain):
            get = urllib.request.Request(url, headers={"X-Enroll-Node": name})  # noqa: S310
            with urllib.request.urlopen(get, timeout=10) as answer:  # noqa: S310 (the live server)
                assert answer.status == 200

    health = Client().get("/pki/health.json").json()
    nodes = {n["node"]: n for a in health["authorities"] for n in a["nodes"]}
    assert set(nodes) == {"web1"}
    assert nodes["web1"]["crl_number"] is None  # never reported: a fetch is no evidence
    assert nodes["web1"]["crl_number"] != newest
    assert nodes["web1"]["state"] == NodeState.NEVER_REPORTED.value
    assert "ghost-1" not in json.dumps(health)
    assert before.count('"node"') == json.dumps(health["authorities"]).count('"node"')
