"""The portal's side of the real-client tests: certificates issued through the enrollment flow with their key
files (:class:`IssuedClient`), the chain's CA and CRL bundles, what front servers must answer
(:func:`assert_accepted`), and a real ``enroll-crl-sync`` run (:func:`run_crl_sync`, :func:`sync_and_reload`).

The fixtures ``chain``, ``chain_ca_file``, ``alice_client`` and ``bob_client`` (tests/harness/fixtures.py)
are built from these.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca.models import RevocationReason
from ca.services import frontservers
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.export import ca_certificate_pem, crl_pem, export_certificate
from ca.services.propagation import crl_healths
from ca.services.revocation import revoke_certificate
from enroll import flows
from tests.harness.chromium import client_certificate
from tests.harness.front import FrontServer
from tests.harness.process import REPO, write_file
from tests.harness.tls import HttpsAnswer, https_get, key_pem
from tests.helpers import make_csr

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from ca.models import Certificate, CertificateAuthority

S = TypeVar("S", bound=FrontServer[Any])


@dataclass(frozen=True, slots=True)
class IssuedClient:
    """A user's certificate as the portal issued it, and the key files that stayed on their machine
    (PEM certificate and key; a PKCS#12 file too once the user made one)."""

    username: str
    certificate: Certificate
    cert_path: Path
    key_path: Path
    pfx_path: Path | None = None
    passphrase: str | None = None

    def get(self, url: str, *, server_ca: Path) -> HttpsAnswer:
        """:func:`~tests.harness.tls.https_get` presenting this certificate."""
        return https_get(url, server_ca=server_ca, cert_path=self.cert_path, key_path=self.key_path)

    def client_certificate(self, origin: str) -> dict[str, str]:
        """Playwright's entry: the PKCS#12 file when there is one, else the PEM certificate and key."""
        if self.pfx_path is not None:
            return client_certificate(origin, pfx_path=self.pfx_path, passphrase=self.passphrase)
        return client_certificate(origin, cert_path=self.cert_path, key_path=self.key_path)


def issue_client(user: User, folder: Path) -> IssuedClient:
    """What a user does by hand: make a key, submit a CSR, get it approved, download the PEM certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = user.get_username()
    key_path = write_file(folder / f"{name}.key.pem", key_pem(key), mode=0o600)
    request = flows.submit_csr(owner=user, data=make_csr(key))
    approved = flows.approve(request_id=request.pk)
    assert approved.certificate is not None, approved.reason
    pem = export_certificate(certificate=approved.certificate, fmt="pem").content
    return IssuedClient(name, approved.certificate, write_file(folder / f"{name}.cert.pem", pem), key_path)


def revoke(certificate: Certificate) -> None:
    """Revoke as the admin screen does (key compromise); the new CRL is published on commit, as in
    production (at once in a transactional test)."""
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)


def assert_accepted(answer: HttpsAnswer, client: IssuedClient) -> None:
    """The server let ``client`` in and saw its certificate: nginx and Apache print the serial as
    upper-case hex, as the portal stores it."""
    assert answer.status == 200, answer
    assert f"verify=SUCCESS serial={client.certificate.serial} " in answer.text, answer
    assert f"CN={client.username}" in answer.text, answer


def portal_chain(root: CertificateAuthority, kind: str) -> list[CertificateAuthority]:
    """``"root"``: the root alone issues; ``"intermediate"``: a new default issuing CA under the root."""
    if kind == "root":
        return [root]
    issuing = create_ca(name="Test Issuing CA", parent=root, make_default=True)
    return [root, issuing]


def portal_ca_bundle(chain: Sequence[CertificateAuthority]) -> bytes:
    """The CA certificates of the chain, PEM: what a front server trusts (and the sync's --ca-file)."""
    return b"".join(ca_certificate_pem(ca) for ca in chain)


def portal_crl_bundle(chain: Sequence[CertificateAuthority]) -> bytes:
    """One current PEM CRL for every CA of the chain, straight from the database."""
    return b"".join(crl_pem(current_crl(ca=ca)) for ca in chain)


def portal_ca_file(chain: Sequence[CertificateAuthority], folder: Path) -> Path:
    """The chain's CA bundle as ``folder/client-ca.pem``: the sync's ``--ca-file`` on a front server."""
    return write_file(folder / "client-ca.pem", portal_ca_bundle(chain))


def serve_chain(factory: Callable[..., S], chain: Sequence[CertificateAuthority], **kwargs: Any) -> S:
    """A front server from ``factory`` (e.g. ``nginx_factory``) trusting the chain, with its current CRLs."""
    return factory(ca_bundle=portal_ca_bundle(chain), crl_bundle=portal_crl_bundle(chain), **kwargs)


def load_crl_bundle(data: bytes) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM bundle, in order (``cryptography`` loads one CRL at a time)."""
    end = b"-----END X509 CRL-----"
    return [x509.load_pem_x509_crl(block + end + b"\n") for block in data.split(end) if block.strip()]


def crl_urls(base_url: str, chain: Sequence[CertificateAuthority]) -> list[str]:
    """The CRL URL of every CA of the chain on the portal at ``base_url`` (e.g. ``live_server.url``)."""
    return [f"{base_url.rstrip('/')}/pki/{ca.slug}.crl" for ca in chain]


def crl_sync_command() -> list[str]:
    """The installed console script ``enroll-crl-sync`` beside this Python, else ``python -m ca.crlsync``."""
    script = Path(sys.executable).parent / "enroll-crl-sync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ca.crlsync"]


@dataclass(frozen=True, slots=True)
class Node:
    """A front server registered on the portal (``manage.py frontserver add``) and its token file."""

    name: str
    token_file: Path


def register_node(name: str, folder: Path) -> Node:
    """Register a front server as ``manage.py frontserver add NAME`` does (the default CA and its
    parents) and save the token it prints as ``folder/NAME.token`` (mode 600)."""
    _server, token = frontservers.register(name=name, actor="test")
    return Node(name, write_file(folder / f"{name}.token", (token + "\n").encode(), mode=0o600))


def run_crl_sync(
    *,
    urls: Sequence[str],
    ca_file: Path,
    output: Path,
    reload_command: str | None = None,
    node: Node | None = None,
    timeout: float = 5.0,
) -> subprocess.CompletedProcess[str]:
    """One run of ``enroll-crl-sync`` as a front server's timer would run it (the generated service adds
    ``--every``: :class:`~tests.harness.crlsync.CrlSyncService`): a separate process, no Django settings
    and no database in its environment; with ``node``, a signed report after the run."""
    argv = crl_sync_command()
    for url in urls:
        argv += ["--url", url]
    argv += ["--ca-file", str(ca_file), "--output", str(output), "--timeout", str(timeout)]
    if reload_command is not None:
        argv += ["--reload-command", reload_command]
    if node is not None:
        argv += ["--node", node.name, "--token-file", str(node.token_file)]
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(REPO)  # only for the ``-m`` fallback; the console script has the package
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout * len(urls) + 30, check=False, env=env
    )


def sync_and_reload(
    server: FrontServer[Any],
    *,
    urls: Sequence[str],
    ca_file: Path,
    reload: bool = True,
    node: Node | None = None,
) -> subprocess.CompletedProcess[str]:
    """One ``enroll-crl-sync`` run that must install new CRLs into ``server.crl_path`` (with the server's
    :attr:`~FrontServer.reload_command` unless ``reload`` is false, e.g. for a server watching the file),
    then wait until the server has loaded them: the reload command and a file watch are asynchronous."""
    mark = server.reload_mark()
    run = run_crl_sync(
        urls=urls,
        ca_file=ca_file,
        output=server.crl_path,
        reload_command=server.reload_command if reload else None,
        node=node,
    )
    assert run.returncode == 0, run.stderr
    assert f"updated {server.crl_path}" in run.stdout, run.stdout
    server.wait_reloaded(mark)
    return run


def reported_numbers(node: str, chain: Sequence[CertificateAuthority]) -> list[int | None]:
    """The CRL number of each CA of the chain that ``node`` reported installed (None: none reported)."""
    by_ca = {health.ca.pk: health for health in crl_healths(cas=list(chain))}
    found = []
    for authority in chain:
        numbers = [n.number for n in by_ca[authority.pk].nodes if n.node == node]
        found.append(numbers[0] if numbers else None)
    return found
