"""A CA whose key is in a PKCS#11 token (SoftHSM2) in front of a real nginx: a certificate it issued is
accepted, and once revoked it is refused with the CRL the token signed (the root alone, and a file-key
issuing CA under the token root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django import DjangoCaptureOnCommitCallbacks
from pytest_django.fixtures import Settings

from ca.models import CertificateAuthority
from ca.services.authorities import TokenPlacement, create_ca
from ca.services.crl import current_crl
from tests.harness.nginx import NginxFactory, assert_refused
from tests.harness.portal import IssuedClient, assert_accepted, portal_crl_bundle, revoke, serve_chain
from tests.harness.softhsm import PIN, SoftHsm, softhsm

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db]


@pytest.fixture
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    with softhsm(tmp_path_factory.mktemp("softhsm")) as made:
        yield made


@pytest.fixture
def ca(db: None, hsm: SoftHsm, settings: Settings) -> CertificateAuthority:
    """The chain's root: its key generated in the token; the portal reads the PIN from its file."""
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file())
    placement = TokenPlacement(module_path=hsm.module, token=hsm.token(), pin=PIN)
    return create_ca(name="Token Root CA", slug="token-root", make_default=True, token=placement)


@pytest.mark.parametrize("chain_kind", ["root", "intermediate"])
def test_nginx_accepts_a_token_cas_client_and_refuses_it_once_revoked_by_the_token_signed_crl(
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    bob_client: IssuedClient,
    nginx_factory: NginxFactory,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    tmp_path: Path,
) -> None:
    assert chain[0].key_in_token
    server = serve_chain(nginx_factory, chain)
    assert_accepted(server.get(alice_client), alice_client)
    assert_accepted(server.get(bob_client), bob_client)

    before = current_crl(ca=chain[-1]).number
    with django_capture_on_commit_callbacks(execute=True):
        revoke(bob_client.certificate)
    assert current_crl(ca=chain[-1]).number > before
    server.update_crl(portal_crl_bundle(chain))

    assert_refused(server.get(bob_client))
    assert_accepted(server.get(alice_client), alice_client)
