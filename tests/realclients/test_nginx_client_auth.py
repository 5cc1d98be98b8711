"""Certificates issued through the enrollment flow, presented by Chromium (Playwright) to a real nginx that
trusts the portal's CA bundle and CRL bundle: accepted, refused without a certificate, refused once revoked
and the republished CRL reloaded; a broken CRL is refused by ``nginx -t`` and the old one keeps serving.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pytest_django import DjangoCaptureOnCommitCallbacks

from ca.models import Certificate, CertificateAuthority
from ca.services.crl import current_crl
from tests.conftest import need_program
from tests.harness.chromium import ChromiumThread, visit
from tests.harness.nginx import NginxError, NginxFactory, NginxServer, assert_refused
from tests.harness.portal import IssuedClient, portal_crl_bundle, serve_chain
from tests.harness.portal import revoke as revoke_now
from tests.harness.tls import HttpsAnswer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db]

BODY = re.compile(r"verify=(?P<verify>\S*) serial=(?P<serial>\S*) dn=(?P<dn>.*)")


def with_pkcs12(client: IssuedClient, folder: Path) -> IssuedClient:
    """The .p12 a user makes for a browser with the command the portal shows (OpenSSL 3: AES-256)."""
    pfx_path, passphrase = folder / f"{client.username}.p12", "p12-passphrase"
    command = [need_program("openssl"), "pkcs12", "-export", "-name", client.username]
    command += ["-inkey", str(client.key_path), "-in", str(client.cert_path)]
    command += ["-out", str(pfx_path), "-passout", f"pass:{passphrase}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return replace(client, pfx_path=pfx_path, passphrase=passphrase)


def revoke(certificate: Certificate, capture: DjangoCaptureOnCommitCallbacks) -> None:
    """Revoke as the admin screen does; the on-commit CRL publication runs as it would in production."""
    with capture(execute=True):
        revoke_now(certificate)


def visit_as(
    browser: Browser, server: NginxServer, client: IssuedClient | None, *, shot: str | None = None
) -> HttpsAnswer:
    """Chromium GETs the server's page in a fresh context, with ``client``'s certificate or none."""
    certificates = [client.client_certificate(server.origin)] if client is not None else []
    return visit(browser, server.url, certificates, shot=shot)


def assert_accepted(seen: HttpsAnswer, client: IssuedClient) -> None:
    assert seen.status == 200, seen.text
    match = BODY.search(seen.text)
    assert match is not None, seen.text
    assert match["verify"] == "SUCCESS"
    # nginx prints the serial as upper-case hex; the portal stores and shows it in the same form.
    assert match["serial"] == client.certificate.serial
    assert f"CN={client.username}" in match["dn"]


@pytest.mark.parametrize("chain_kind", ["root", "intermediate"])
def test_nginx_accepts_an_issued_certificate_and_refuses_it_once_revoked(
    chain_kind: str,
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    tmp_path: Path,
    nginx_factory: NginxFactory,
    chromium: ChromiumThread,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    bob_client = with_pkcs12(bob_client, tmp_path)
    assert alice_client.certificate.ca == chain[-1]
    server = serve_chain(nginx_factory, chain)

    accepted = chromium.call(visit_as, server, alice_client, shot=f"nginx-{chain_kind}-accepted")
    assert_accepted(accepted, alice_client)
    assert_refused(
        chromium.call(visit_as, server, None, shot=f"nginx-{chain_kind}-no-certificate"),
        "No required SSL certificate was sent",
    )

    revoke(alice_client.certificate, django_capture_on_commit_callbacks)
    # nginx still holds the CRL it loaded at start: the revocation needs the republished CRL and a reload.
    assert_accepted(chromium.call(visit_as, server, alice_client), alice_client)
    assert current_crl(ca=chain[-1]).entries == 1
    server.update_crl(portal_crl_bundle(chain))

    revoked = chromium.call(visit_as, server, alice_client, shot=f"nginx-{chain_kind}-revoked")
    assert_refused(revoked, "The SSL certificate error")
    assert "certificate revoked" in server.error_log()
    assert_accepted(chromium.call(visit_as, server, bob_client), bob_client)


@pytest.mark.parametrize("chain_kind", ["intermediate"])
def test_a_truncated_crl_is_refused_and_the_old_one_keeps_serving(
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    nginx_factory: NginxFactory,
    chromium: ChromiumThread,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    server = serve_chain(nginx_factory, chain)
    assert_accepted(chromium.call(visit_as, server, alice_client), alice_client)
    loaded = server.crl_path.read_bytes()
    workers = server.workers()

    revoke(alice_client.certificate, django_capture_on_commit_callbacks)
    republished = portal_crl_bundle(chain)
    with pytest.raises(NginxError, match="nginx -t refused the new CRL"):
        server.update_crl(republished[: len(republished) - 200])

    # Not reloaded: the same workers, the previous file back in place, the old CRL still serving.
    assert server.workers() == workers
    assert server.crl_path.read_bytes() == loaded
    still = chromium.call(visit_as, server, alice_client, shot="nginx-truncated-crl-old-crl-serving")
    assert_accepted(still, alice_client)

    server.update_crl(republished)
    assert server.workers().isdisjoint(workers)
    assert_refused(chromium.call(visit_as, server, alice_client), "The SSL certificate error")
