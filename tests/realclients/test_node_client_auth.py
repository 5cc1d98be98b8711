"""A real node HTTPS server (``https.createServer({key, cert, ca, crl, requestCert: true,
rejectUnauthorized: true})``) in front of the portal's CAs: a portal-issued certificate is accepted; after a
revocation and one ``enroll-crl-sync`` run the server swaps the new CRL in with ``setSecureContext`` (on
SIGHUP from the reload command, or by watching the file), without a restart, and refuses the certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from ca.models import CertificateAuthority
from ca.services.crl import current_crl
from tests.harness.node import NodeError, NodeFactory
from tests.harness.portal import (
    IssuedClient,
    crl_urls,
    load_crl_bundle,
    portal_crl_bundle,
    register_node,
    reported_numbers,
    revoke,
    serve_chain,
    sync_and_reload,
)
from tests.harness.tls import HttpsAnswer

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]


def assert_accepted(answer: HttpsAnswer, client: IssuedClient) -> None:
    assert answer.status == 200, answer
    assert "verify=SUCCESS " in answer.text
    serial = answer.text.split("serial=", 1)[1].split()[0]
    assert int(serial, 16) == int(client.certificate.serial, 16)
    assert f"CN={client.username}" in answer.text


@pytest.mark.parametrize(
    ("chain_kind", "trigger"), [("root", "signal"), ("intermediate", "signal"), ("intermediate", "watch")]
)
def test_node_refuses_a_revoked_certificate_after_one_sync_without_a_restart(
    trigger: str,
    live_server: LiveServer,
    chain: list[CertificateAuthority],
    chain_ca_file: Path,
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    node_factory: NodeFactory,
) -> None:
    server = serve_chain(node_factory, chain, watch_interval=0.1 if trigger == "watch" else None)
    pid = server.pid

    assert_accepted(server.get(alice_client), alice_client)
    anonymous = server.get()
    assert anonymous.refused_in_tls, anonymous
    assert "CERTIFICATE_REQUIRED" in anonymous.text  # the TLS 1.3 alert

    revoke(alice_client.certificate)
    assert_accepted(server.get(alice_client), alice_client)  # node still has the CRL it loaded

    # "watch": no reload command at all, node sees the file change (as frontend_config node does).
    # The signal or the file watch is asynchronous: sync_and_reload waits for the swap.
    sync_and_reload(
        server,
        urls=crl_urls(live_server.url, chain),
        ca_file=chain_ca_file,
        reload=trigger == "signal",
        node=register_node("web1", chain_ca_file.parent),
    )

    # node ends the connection after the handshake, with no alert and no reason logged anywhere; that it is
    # the revocation shows from bob being let in, and from the CRL node was given.
    refused = server.get(alice_client)
    assert refused.refused_in_tls, refused
    issuing_crl = load_crl_bundle(server.crl_path.read_bytes())[-1]
    assert issuing_crl.issuer == chain[-1].certificate.subject
    serial = int(alice_client.certificate.serial, 16)
    assert issuing_crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert_accepted(server.get(bob_client), bob_client)
    # The same process all along: setSecureContext, no restart.
    assert server.pid == pid
    assert server.process is not None
    assert server.process.poll() is None
    assert server.log().splitlines().count("listening") == 1
    assert reported_numbers("web1", chain)[-1] == current_crl(ca=chain[-1]).number


@pytest.mark.parametrize("chain_kind", ["intermediate"])
def test_a_crl_node_cannot_load_is_not_swapped_in_and_the_old_one_keeps_serving(
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    node_factory: NodeFactory,
) -> None:
    server = serve_chain(node_factory, chain)
    assert_accepted(server.get(alice_client), alice_client)

    bundle = portal_crl_bundle(chain)
    with pytest.raises(NodeError, match="node kept its old CRL"):
        server.update_crl(bundle[: len(bundle) - 100])
    assert_accepted(server.get(alice_client), alice_client)
