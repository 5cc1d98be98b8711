"""A real Apache (Debian's apache2, standalone ``-f`` configuration) in front of the portal's CAs:
``SSLVerifyClient require``, ``SSLCARevocationFile`` + ``SSLCARevocationCheck chain``. A portal-issued
certificate is accepted; after a revocation, one ``enroll-crl-sync`` run with a graceful restart
(``kill -USR1``) as its reload command makes Apache refuse it with a TLS alert.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from pytest_django.live_server_helper import LiveServer

from ca import services
from ca.models import CertificateAuthority, CrlFetch, RevocationReason
from tests.realclients import (  # noqa: F401  (fixtures)
    ApacheError,
    ApacheFactory,
    ApacheServer,
    HttpsAnswer,
    IssuedClient,
    apache_factory,
    crl_urls,
    https_get,
    issue_client,
    portal_ca_bundle,
    portal_chain,
    portal_crl_bundle,
    run_crl_sync,
    write_file,
)

pytestmark = [pytest.mark.real_client, pytest.mark.django_db(transaction=True)]


def get(server: ApacheServer, client: IssuedClient) -> HttpsAnswer:
    return client.get(server.url, server_ca=server.server_ca_path)


def assert_accepted(answer: HttpsAnswer, client: IssuedClient) -> None:
    assert answer.status == 200, answer
    # mod_ssl's SSL_CLIENT_M_SERIAL: upper-case hex, as the portal stores it.
    assert f"verify=SUCCESS serial={client.certificate.serial} " in answer.text
    assert f"CN={client.username}" in answer.text


@pytest.mark.parametrize("kind", ["root", "intermediate"])
def test_apache_refuses_a_revoked_certificate_after_one_sync_with_a_graceful_restart(
    kind: str,
    live_server: LiveServer,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    tmp_path: Path,
    apache_factory: ApacheFactory,  # noqa: F811
) -> None:
    chain = portal_chain(ca, kind)
    alice_client, bob_client = issue_client(alice, tmp_path), issue_client(bob, tmp_path)
    ca_file = write_file(tmp_path / "client-ca.pem", portal_ca_bundle(chain))
    server = apache_factory(ca_bundle=portal_ca_bundle(chain), crl_bundle=portal_crl_bundle(chain))

    assert_accepted(get(server, alice_client), alice_client)
    anonymous = https_get(server.url, server_ca=server.server_ca_path)
    assert anonymous.refused_in_tls, anonymous
    assert "CERTIFICATE_REQUIRED" in anonymous.text

    services.revoke_certificate(certificate=alice_client.certificate, reason=RevocationReason.KEY_COMPROMISE)
    assert_accepted(get(server, alice_client), alice_client)  # Apache still has the CRL it loaded

    mark = server.reload_mark()
    run = run_crl_sync(
        urls=crl_urls(live_server.url, chain),
        ca_file=ca_file,
        output=server.crl_path,
        reload_command=server.reload_command,
        node="web1",
    )
    assert run.returncode == 0, run.stderr
    assert f"updated {server.crl_path}" in run.stdout
    server.wait_reloaded(mark)  # `kill -USR1` returns at once; the restart takes a moment

    refused = get(server, alice_client)
    assert refused.refused_in_tls, refused
    assert "CERTIFICATE_REVOKED" in refused.text  # the TLS alert the client got
    assert "certificate revoked" in server.error_log()
    assert_accepted(get(server, bob_client), bob_client)
    for authority in chain:
        assert (
            CrlFetch.objects.get(ca=authority, node="web1").number
            == services.current_crl(ca=authority).number
        )


def test_a_truncated_crl_on_a_graceful_restart_makes_apache_exit(
    ca: CertificateAuthority,
    alice: User,
    tmp_path: Path,
    apache_factory: ApacheFactory,  # noqa: F811
) -> None:
    """Why enroll-crl-sync must never install a broken CRL for Apache: ``apache2 -t`` does not notice one,
    and the graceful restart that would load it ends Apache (every site on it down)."""
    chain = portal_chain(ca, "root")
    alice_client = issue_client(alice, tmp_path)
    bundle = portal_crl_bundle(chain)
    server = apache_factory(ca_bundle=portal_ca_bundle(chain), crl_bundle=bundle)
    assert_accepted(get(server, alice_client), alice_client)

    with pytest.raises(ApacheError, match="exited"):
        server.update_crl(bundle[: len(bundle) - 100])
