"""A real Apache (Debian's apache2, standalone ``-f`` configuration) in front of the portal's CAs:
``SSLVerifyClient require``, ``SSLCARevocationFile`` + ``SSLCARevocationCheck chain``. A portal-issued
certificate is accepted; after a revocation, one ``enroll-crl-sync`` run with a graceful restart
(``kill -USR1``) as its reload command makes Apache refuse it with a TLS alert.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from ca.models import CertificateAuthority
from ca.services.crl import current_crl
from tests.harness.apache import ApacheError, ApacheFactory
from tests.harness.portal import (
    IssuedClient,
    assert_accepted,
    crl_urls,
    portal_crl_bundle,
    register_node,
    reported_numbers,
    revoke,
    serve_chain,
    sync_and_reload,
)

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("chain_kind", ["root", "intermediate"])
def test_apache_refuses_a_revoked_certificate_after_one_sync_with_a_graceful_restart(
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    chain_ca_file: Path,
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    apache_factory: ApacheFactory,
) -> None:
    server = serve_chain(apache_factory, chain)

    assert_accepted(server.get(alice_client), alice_client)
    anonymous = server.get()
    assert anonymous.refused_in_tls, anonymous
    assert "CERTIFICATE_REQUIRED" in anonymous.text

    revoke(alice_client.certificate)
    assert_accepted(server.get(alice_client), alice_client)  # Apache still has the CRL it loaded

    # `kill -USR1` returns at once; the restart takes a moment: sync_and_reload waits for it.
    node = register_node("web1", chain_ca_file.parent)
    sync_and_reload(server, urls=crl_urls(live_server.url, chain), ca_file=chain_ca_file, node=node)

    refused = server.get(alice_client)
    assert refused.refused_in_tls, refused
    assert "CERTIFICATE_REVOKED" in refused.text  # the TLS alert the client got
    assert "certificate revoked" in server.error_log()
    assert_accepted(server.get(bob_client), bob_client)
    # web1's signed report: the newest CRL of every CA, installed after the graceful restart.
    assert reported_numbers("web1", chain) == [current_crl(ca=authority).number for authority in chain]


def test_a_truncated_crl_on_a_graceful_restart_makes_apache_exit(
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    apache_factory: ApacheFactory,
) -> None:
    """Why enroll-crl-sync must never install a broken CRL for Apache: ``apache2 -t`` does not notice one,
    and the graceful restart that would load it ends Apache (every site on it down)."""
    server = serve_chain(apache_factory, chain)
    assert_accepted(server.get(alice_client), alice_client)

    bundle = portal_crl_bundle(chain)
    with pytest.raises(ApacheError, match="exited"):
        server.update_crl(bundle[: len(bundle) - 100])
