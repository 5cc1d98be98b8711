"""A CA rollover in front of a real nginx: the front server trusts only the old key generation; after
``rollover_ca`` one ``enroll-crl-sync --ca-bundle-url`` run adds the new generation to nginx's CA file (it
chains to the old one through the link certificate) and its CRL to the CRL bundle, and reloads nginx. Then
clients certified under the old key and under the new one both get in, and a revoked one of either is
refused, all without restarting nginx (the same master process throughout, reloaded by the sync only).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from accounts.services import mark_email_verified
from ca.models import CertificateAuthority
from ca.services.rollover import rollover_ca
from tests.harness.nginx import NginxFactory, NginxServer, assert_refused
from tests.harness.portal import (
    IssuedClient,
    assert_accepted,
    crl_sync_command,
    issue_client,
    revoke,
    serve_chain,
)
from tests.harness.process import REPO

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]


def sync(server: NginxServer, *, base: str, slug: str) -> subprocess.CompletedProcess[str]:
    """One ``enroll-crl-sync`` run as a front server's timer runs it, keeping nginx's CA file and CRL
    bundle, with nginx's reload as its reload command; waits until the new workers serve."""
    mark = server.reload_mark()
    argv = [
        *crl_sync_command(),
        "--url",
        f"{base}/pki/{slug}.crl.pem",
        "--ca-bundle-url",
        f"{base}/pki/{slug}/bundle.pem",
        "--ca-file",
        str(server.ca_path),
        "--output",
        str(server.crl_path),
        "--reload-command",
        server.reload_command,
        "--timeout",
        "5",
    ]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no Django settings, no database
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert run.returncode == 0, run.stderr
    assert f"updated {server.crl_path}" in run.stdout, run.stdout
    server.wait_reloaded(mark)
    return run


def user(name: str) -> User:
    made = User.objects.create_user(name, f"{name}@example.com", f"{name}-password-123")
    mark_email_verified(made)
    return made


def test_clients_of_both_key_generations_get_in_and_revoked_ones_of_either_are_refused_through_the_switch(
    live_server: LiveServer,
    settings: Settings,
    ca: CertificateAuthority,
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    nginx_factory: NginxFactory,
    tmp_path: Path,
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url  # the bundle's CRL lines name this portal
    server = serve_chain(nginx_factory, chain)  # trusts the old generation only
    master = server.pid
    assert_accepted(server.get(alice_client), alice_client)

    rolled = rollover_ca(ca=ca)
    carol = issue_client(user("carol"), tmp_path)
    dave = issue_client(user("dave"), tmp_path)
    assert carol.certificate.ca == rolled.new
    assert_refused(server.get(carol))  # nginx does not know the new key yet
    assert_accepted(server.get(alice_client), alice_client)  # nor has it lost the old one

    run = sync(server, base=live_server.url, slug=ca.slug)
    assert "warning" not in run.stderr, run.stderr
    trusted = x509.load_pem_x509_certificates(server.ca_path.read_bytes())
    assert [c.serial_number for c in trusted] == [
        ca.certificate.serial_number,
        rolled.new.certificate.serial_number,
    ]
    for client in (alice_client, bob_client, carol, dave):
        assert_accepted(server.get(client), client)

    revoke(bob_client.certificate)  # on the old generation's CRL, signed by the old key
    revoke(dave.certificate)  # on the new generation's CRL
    sync(server, base=live_server.url, slug=ca.slug)
    assert_refused(server.get(bob_client))
    assert_refused(server.get(dave))
    assert_accepted(server.get(alice_client), alice_client)
    assert_accepted(server.get(carol), carol)
    assert server.pid == master  # reloaded by the sync, never restarted
    assert CertificateAuthority.objects.get(pk=ca.pk).successor == rolled.new
