"""The harness's fixtures, registered once for the whole suite (``pytest_plugins`` in tests/conftest.py).

Servers: ``nginx_factory``, ``apache_factory``, ``node_factory`` (each call starts one server in a fresh
folder; all are stopped at the end of the test) and ``chromium`` (headless Debian Chromium in a thread of
its own, one per test module). A test that uses one of them is marked ``real_server`` (tests/conftest.py,
SERVER_FIXTURES).

The portal's side: ``chain`` (the root alone, or root + issuing CA with
``@pytest.mark.parametrize("chain_kind", ["root", "intermediate"])``), ``chain_ca_file``, ``alice_client``
and ``bob_client`` (issued by the chain's last CA).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness.apache import ApacheFactory, ApacheServer
from tests.harness.chromium import ChromiumThread
from tests.harness.nginx import NginxFactory, NginxServer
from tests.harness.node import NodeFactory, NodeServer
from tests.harness.portal import IssuedClient, issue_client, portal_ca_file, portal_chain
from tests.harness.process import started_in

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from ca.models import CertificateAuthority


@pytest.fixture
def nginx_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFactory]:
    """Start private nginx servers: ``nginx_factory(ca_bundle=..., crl_bundle=...)``; all stopped at the end.

    Each gets its own directory (configuration, certificates, CRL, logs, pid, temp paths). nginx's master
    reads the certificates and CRLs, so the unprivileged workers need no access to pytest's 0700 tree.
    """
    yield from started_in(tmp_path_factory, NginxServer, "nginx")


@pytest.fixture
def apache_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheFactory]:
    """Start private Apache servers: ``apache_factory(ca_bundle=..., crl_bundle=...)``; stopped at the end."""
    yield from started_in(tmp_path_factory, ApacheServer, "apache")


@pytest.fixture
def node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Start node HTTPS servers: ``node_factory(ca_bundle=..., crl_bundle=...)``; stopped at the end."""
    yield from started_in(tmp_path_factory, NodeServer, "node")


@pytest.fixture(scope="module")
def chromium() -> Iterator[ChromiumThread]:
    """Headless Debian Chromium for the tests of one module (in its own thread: see
    :class:`ChromiumThread`): one start per module; each test opens contexts of its own and closes them."""
    with ChromiumThread() as running:
        yield running


@pytest.fixture
def chain_kind() -> str:
    """Which chain the :func:`chain` fixture builds: ``"root"``, unless the test parametrizes
    ``chain_kind`` (``"root"`` or ``"intermediate"``, see :func:`~tests.harness.portal.portal_chain`)."""
    return "root"


@pytest.fixture
def chain(ca: CertificateAuthority, chain_kind: str) -> list[CertificateAuthority]:
    """The portal's chain of :func:`chain_kind`, root first; the last CA issues."""
    return portal_chain(ca, chain_kind)


@pytest.fixture
def chain_ca_file(chain: list[CertificateAuthority], tmp_path: Path) -> Path:
    """The chain's CA bundle in ``tmp_path`` (:func:`~tests.harness.portal.portal_ca_file`)."""
    return portal_ca_file(chain, tmp_path)


@pytest.fixture
def alice_client(chain: list[CertificateAuthority], alice: User, tmp_path: Path) -> IssuedClient:
    """alice's certificate from the chain's issuing CA, with her key files in ``tmp_path``."""
    return issue_client(alice, tmp_path)


@pytest.fixture
def bob_client(chain: list[CertificateAuthority], bob: User, tmp_path: Path) -> IssuedClient:
    """bob's certificate from the chain's issuing CA, with his key files in ``tmp_path``."""
    return issue_client(bob, tmp_path)
