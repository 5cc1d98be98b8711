"""A real nginx kept current by the real ``enroll-crl-sync`` against the portal (pytest-django's live
server), and nginx checking client certificates by OCSP against the portal's responder.

- One sync run with ``--reload-command`` after a revocation: nginx refuses the certificate, the registered
  node's signed report puts it at the new CRL number; a second run changes nothing and does not reload.
- The portal unreachable: the sync fails, the working CRL file stays, nginx is not reloaded.
- ``ssl_ocsp``: a revocation is refused on the next connection, with no sync and no reload. Without
  ``ssl_ocsp_cache`` nginx asks on every handshake; with it, a cached "good" answer keeps serving until
  its nextUpdate. A responder that cannot be reached refuses every client (nginx fails closed).

Clients use Python's ssl module (a fresh connection each time, the portal-issued certificate and key).
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from ca.models import CertificateAuthority
from ca.services.crl import current_crl
from ca.services.propagation import crl_health
from tests.harness.nginx import NginxFactory, NginxServer, assert_refused
from tests.harness.portal import (
    IssuedClient,
    assert_accepted,
    crl_urls,
    load_crl_bundle,
    portal_ca_bundle,
    register_node,
    reported_numbers,
    revoke,
    run_crl_sync,
    serve_chain,
    sync_and_reload,
)
from tests.harness.process import free_port

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def responder(live_server: LiveServer, settings: Settings, chain: list[CertificateAuthority]) -> str:
    """The portal's OCSP responder for the chain's issuing CA, at 127.0.0.1 (nginx resolves no names
    without a resolver)."""
    port = urllib.parse.urlsplit(live_server.url).port
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    return f"http://127.0.0.1:{port}/pki/{chain[-1].slug}/ocsp"


def serve_ocsp(
    factory: NginxFactory,
    chain: list[CertificateAuthority],
    responder: str,
    **options: str,
) -> NginxServer:
    """nginx trusting the chain, checking client certificates by OCSP at ``responder`` and with no
    ``ssl_crl`` at all: only OCSP decides."""
    return factory(ca_bundle=portal_ca_bundle(chain), crl_bundle=None, ocsp_responder=responder, **options)


def installed_numbers(path: Path) -> list[int]:
    """The CRL numbers in a PEM CRL bundle, in order."""
    crls = load_crl_bundle(path.read_bytes())
    return [c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for c in crls]


# --- CRL + enroll-crl-sync -----------------------------------------------------------------------------


@pytest.mark.parametrize("chain_kind", ["root", "intermediate"])
def test_one_sync_run_with_a_reload_makes_nginx_refuse_a_revoked_certificate(
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    chain_ca_file: Path,
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    nginx_factory: NginxFactory,
) -> None:
    server = serve_chain(nginx_factory, chain)
    urls = crl_urls(live_server.url, chain)
    assert_accepted(server.get(alice_client), alice_client)
    before = [current_crl(ca=authority).number for authority in chain]

    revoke(alice_client.certificate)
    after = [current_crl(ca=authority).number for authority in chain]
    assert after[-1] > before[-1]
    assert_accepted(server.get(alice_client), alice_client)  # nginx still has the CRL it loaded

    # `nginx -s reload` returns before the old workers have gone: sync_and_reload waits for them.
    node = register_node("web1", chain_ca_file.parent)
    sync_and_reload(server, urls=urls, ca_file=chain_ca_file, node=node)

    assert_refused(server.get(alice_client))
    assert "certificate revoked" in server.error_log()
    assert_accepted(server.get(bob_client), bob_client)
    assert installed_numbers(server.crl_path) == after
    # web1's signed report: it installed the newest CRL of every CA of the chain.
    assert reported_numbers("web1", chain) == after
    health = crl_health(ca=chain[-1])
    assert [(n.node, n.current) for n in health.nodes] == [("web1", True)]

    # Run again, as the timer does a minute later: nothing changed, nothing reloaded.
    workers = server.workers()
    again = run_crl_sync(
        urls=urls,
        ca_file=chain_ca_file,
        output=server.crl_path,
        reload_command=server.reload_command,
        node=node,
    )
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    time.sleep(0.2)
    assert server.workers() == workers


@pytest.mark.parametrize("chain_kind", ["intermediate"])
@pytest.mark.parametrize("down", ["every URL", "the issuing CA's URL"])
def test_a_sync_with_the_portal_unreachable_keeps_the_working_crl_and_does_not_reload(
    down: str,
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    chain_ca_file: Path,
    alice_client: IssuedClient,
    nginx_factory: NginxFactory,
) -> None:
    server = serve_chain(nginx_factory, chain)
    # A first, working run installs the portal's CRLs and its state file (ETags, numbers).
    node = register_node("web1", chain_ca_file.parent)
    first = run_crl_sync(
        urls=crl_urls(live_server.url, chain), ca_file=chain_ca_file, output=server.crl_path, node=node
    )
    assert first.returncode == 0, first.stderr
    installed = server.crl_path.read_bytes()
    state = server.crl_path.with_name(server.crl_path.name + ".state.json").read_bytes()
    revoke(alice_client.certificate)

    nobody = f"http://127.0.0.1:{free_port()}"  # the portal "stopped": nothing listens there
    urls = (
        crl_urls(nobody, chain)
        if down == "every URL"
        else [*crl_urls(live_server.url, chain[:1]), *crl_urls(nobody, chain[1:])]
    )
    workers = server.workers()
    run = run_crl_sync(
        urls=urls,
        ca_file=chain_ca_file,
        output=server.crl_path,
        reload_command=server.reload_command,
        node=node,
    )

    assert run.returncode == 1
    assert "cannot fetch the CRL" in run.stderr
    assert f"{server.crl_path} left unchanged" in run.stderr
    assert server.crl_path.read_bytes() == installed
    assert server.crl_path.with_name(server.crl_path.name + ".state.json").read_bytes() == state
    time.sleep(0.2)
    assert server.workers() == workers  # not reloaded
    # nginx goes on with the CRL it has (this front server does not know of the revocation yet).
    assert_accepted(server.get(alice_client), alice_client)
    # What web1 reported installed is still the old CRL (a failed run's report, if it got through, says so).
    reported = reported_numbers("web1", chain)[-1]
    assert reported is not None
    assert reported < current_crl(ca=chain[-1]).number


# --- OCSP ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain_kind", "mode"),
    [("root", "on"), ("intermediate", "leaf")],
)
def test_with_ssl_ocsp_a_revocation_is_refused_at_once_without_sync_or_reload(
    mode: str,
    chain: list[CertificateAuthority],
    responder: str,
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    nginx_factory: NginxFactory,
) -> None:
    # No ssl_ocsp_cache: nginx asks on every handshake.
    server = serve_ocsp(nginx_factory, chain, responder, ocsp_mode=mode)
    assert_accepted(server.get(alice_client), alice_client)
    workers = server.workers()

    revoke(alice_client.certificate)

    assert_refused(server.get(alice_client))
    assert "certificate revoked" in server.error_log()
    assert_accepted(server.get(bob_client), bob_client)
    assert server.workers() == workers  # no reload happened


@pytest.mark.parametrize("chain_kind", ["intermediate"])
def test_ssl_ocsp_on_with_an_intermediate_and_one_responder_checks_the_whole_chain(
    chain: list[CertificateAuthority],
    responder: str,
    alice_client: IssuedClient,
    nginx_factory: NginxFactory,
) -> None:
    """``ssl_ocsp on`` asks the one fixed responder about the issuing CA's own certificate too; the
    portal's responder answers for every CA of the chain (a parent for the CAs it signed), so the chain
    is accepted and a revoked client refused."""
    server = serve_ocsp(nginx_factory, chain, responder, ocsp_mode="on")
    assert_accepted(server.get(alice_client), alice_client)
    assert "OCSP response not successful" not in server.error_log()

    revoke(alice_client.certificate)

    assert_refused(server.get(alice_client))
    assert "certificate revoked" in server.error_log()


@pytest.mark.timed  # the cached answer's seconds: runs alone (tests/conftest.py)
def test_with_ssl_ocsp_cache_a_good_answer_serves_until_its_next_update(
    settings: Settings,
    chain: list[CertificateAuthority],
    responder: str,
    alice_client: IssuedClient,
    nginx_factory: NginxFactory,
) -> None:
    """The effect of ``ssl_ocsp_cache``: nginx keeps a response until its nextUpdate
    (ENROLL_OCSP_VALIDITY_SECONDS, 4 s by default), so a revocation waits that long."""
    validity = 3
    settings.ENROLL_OCSP_VALIDITY_SECONDS = validity
    server = serve_ocsp(nginx_factory, chain, responder, ocsp_cache="shared:enroll_ocsp:1m")
    asked_at = time.monotonic()
    assert_accepted(server.get(alice_client), alice_client)  # asks the responder: "good", cached
    revoke(alice_client.certificate)
    assert_accepted(server.get(alice_client), alice_client)  # the cached "good" answer, not asked again

    # The answer's thisUpdate is whole seconds: it runs out between validity - 1 and validity s after asking.
    deadline = asked_at + validity + 5
    while (answer := server.get(alice_client)).status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_refused(answer)
    assert "certificate revoked" in server.error_log()
    assert time.monotonic() - asked_at > validity - 1.5


def test_with_ssl_ocsp_an_unreachable_responder_refuses_every_client(
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    nginx_factory: NginxFactory,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/pki/{chain[-1].slug}/ocsp"  # nothing listens there
    server = serve_ocsp(nginx_factory, chain, nobody)
    assert_refused(server.get(alice_client))
    assert "certificate status request failed" in server.error_log()
