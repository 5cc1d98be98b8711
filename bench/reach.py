"""Revocation reach (issue 18): how long after the click a revoked client is refused by nginx, Apache and
node kept current by ``enroll-crl-sync --every 2`` as a service, measured at the client.

The portal is gunicorn on the benchmark's throwaway database (:func:`bench.endpoint.gunicorn`); the
servers, the sync service and the measurement are the real-server tests' harness (``tests/harness``:
:class:`~tests.harness.crlsync.CrlSyncService`, :func:`~tests.harness.crlsync.reach_seconds`), so the
benchmark and ``tests/realclients/test_revocation_reach.py`` measure the same thing the same way. That
makes the benchmark need the test dependencies (pytest, as ``make bench`` has them) and the programs; a
missing program is reported as skipped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from accounts.services import mark_email_verified
from bench.common import Output, at_most, emit
from bench.endpoint import gunicorn
from ca.models import CertificateAuthority
from ca.services import authorities, frontservers
from ca.services.propagation import NodeState, crl_healths
from tests.harness.apache import ApacheServer
from tests.harness.crlsync import CrlSyncService, Reach, reach_seconds
from tests.harness.front import FrontServer
from tests.harness.nginx import NginxServer
from tests.harness.node import NodeServer
from tests.harness.portal import crl_urls, issue_client, portal_ca_file, portal_crl_bundle, revoke

#: The issue's target: a revoked client refused within this many seconds of the click (median).
REACH_TARGET_SECONDS = 5.0
EVERY = 2.0
SERVERS: dict[str, Callable[..., FrontServer[Any]]] = {
    "nginx": NginxServer,
    "apache": ApacheServer,
    "node": partial(NodeServer, watch_interval=0.5),  # the generated node.js polls every 500 ms
}
#: What need_program raises for a missing program (skip; or fail with ENROLL_REQUIRE_REAL_CLIENTS=1).
_MISSING = (pytest.skip.Exception, pytest.fail.Exception)


def _user(name: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com")
    mark_email_verified(user)
    return user


def _wait_current(node: str, chain: list[CertificateAuthority], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        states = {n.state for h in crl_healths(cas=chain) for n in h.nodes if n.node == node}
        if states == {NodeState.CURRENT}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node} did not report the newest CRLs within {seconds:g} s: {states}")
        time.sleep(0.2)


@contextmanager
def _folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="enroll-bench-reach-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_reach(
    kind: str, *, portal_url: str, chain: list[CertificateAuthority], runs: int, folder: Path
) -> Reach:
    """``runs`` revocations of fresh certificates at a ``kind`` server kept current by the sync service."""
    ca_file = portal_ca_file(chain, folder)
    node = f"bench-{kind}"
    _server, token = frontservers.register(name=node, actor="bench")
    with ExitStack() as stack:
        server = stack.enter_context(
            SERVERS[kind](folder / kind, ca_bundle=ca_file.read_bytes(), crl_bundle=portal_crl_bundle(chain))
        )
        sync = CrlSyncService(
            folder / f"{kind}-sync",
            urls=crl_urls(portal_url, chain),
            ca_file=ca_file,
            output=server.crl_path,
            node=node,
            token=token,
            every=EVERY,
            reload_command=None if kind == "node" else server.reload_command,
        )
        stack.enter_context(sync)
        _wait_current(node, chain)
        seconds = []
        for run in range(runs):
            client = issue_client(_user(f"bench-reach-{kind}-{run}"), folder)
            answer = server.get(client)
            if answer.status != 200:
                raise RuntimeError(f"{kind} did not let a fresh certificate in: {answer}")
            seconds.append(reach_seconds(partial(server.get, client), partial(revoke, client.certificate)))
            time.sleep(0.5)  # the next click finds the server settled after its reload
    return Reach(seconds)


def bench_reach(out: Output, *, runs: int, servers: list[str]) -> None:
    root = authorities.create_ca(name="Bench Reach Root", slug="bench-reach-root", make_default=False)
    issuing = authorities.create_ca(
        name="Bench Reach Issuing", slug="bench-reach-issuing", parent=root, make_default=True
    )
    chain = [root, issuing]
    connection.close()  # gunicorn's workers use the database from here
    with gunicorn() as port, _folder() as folder:
        for kind in servers:
            try:
                reach = measure_reach(
                    kind, portal_url=f"http://127.0.0.1:{port}", chain=chain, runs=runs, folder=folder
                )
            except _MISSING as missing:
                emit(out, figure="revocation_reach", server=kind, skipped=str(missing))
                continue
            emit(
                out,
                figure="revocation_reach",
                server=kind,
                runs=len(reach.seconds),
                median_seconds=round(reach.median, 2),
                max_seconds=round(reach.maximum, 2),
                seconds=[round(s, 2) for s in reach.seconds],
                **at_most(reach.median, REACH_TARGET_SECONDS, "s (median)"),
                sync=f"enroll-crl-sync --every {EVERY:g} as a service, signed reports",
                measured="click (the revocation service) until new handshakes are refused for good "
                "(5 in a row, timed from the first), at the client",
                database=connection.vendor,
            )
