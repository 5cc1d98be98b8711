"""``openssl ocsp`` against the portal's one responder URL, ``/pki/ocsp`` (issue 19, "Done when"): good,
revoked and unknown for a leaf (asked of the issuing CA) and for the issuing CA itself (asked of its
root), with SHA-1 and SHA-256 CertIDs, with and without a nonce; every signed answer verifies against the
chain ("Response verify OK"). A CA the portal does not host gets ``unauthorized``.

The portal is pytest-django's live server; openssl POSTs its requests.
"""

from __future__ import annotations

import secrets
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from ca.models import CertificateAuthority
from ca.services.export import ca_certificate_pem
from tests.harness.openssl import openssl
from tests.harness.portal import IssuedClient, revoke
from tests.harness.process import write_file
from tests.harness.tls import make_server_certificate

pytestmark = [
    pytest.mark.real_client,
    pytest.mark.real_server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("chain_kind", ["intermediate"]),
]


def never_issued() -> str:
    """A serial no CA of the portal issued (20 random bytes, as the portal's own serials are)."""
    return f"0x{secrets.token_hex(20).upper()}"


class Asker:
    """``openssl ocsp -issuer ISSUER -DIGEST (-cert FILE | -serial N) -url URL -CAfile CHAIN``."""

    def __init__(self, url: str, chain_file: Path, digest: str, nonce: bool) -> None:
        self.url = url
        self.chain_file = chain_file
        self.digest = digest
        self.nonce = nonce

    def run(self, issuer: Path, *target: str) -> str:
        # The digest option applies to the -cert or -serial after it: the CertID's hashes.
        nonce = "-nonce" if self.nonce else "-no_nonce"
        result = openssl(
            "ocsp",
            *("-issuer", str(issuer), f"-{self.digest}", *target, nonce),
            *("-url", self.url, "-CAfile", str(self.chain_file), "-resp_text"),
        )
        return result.stdout.decode() + result.stderr.decode()

    def status(self, issuer: Path, *target: str) -> str:
        """The status openssl printed for the one certificate asked about; the answer must verify."""
        output = self.run(issuer, *target)
        assert "Response verify OK" in output, output
        assert f"Hash Algorithm: {self.digest}" in output, output  # the CertID asked with is answered
        (line,) = [line for line in output.splitlines() if line.startswith(f"{target[-1]}: ")]
        return line.split(": ", 1)[1].strip()


@pytest.fixture(params=[("sha1", False), ("sha256", False), ("sha1", True), ("sha256", True)])
def asker(request: pytest.FixtureRequest, live_server: LiveServer, chain_ca_file: Path) -> Asker:
    digest, nonce = request.param
    return Asker(live_server.url + reverse("ca:responder"), chain_ca_file, digest, nonce)


@pytest.fixture
def ca_files(chain: list[CertificateAuthority], tmp_path: Path) -> tuple[Path, Path]:
    """The root's and the issuing CA's certificates, PEM."""
    root, issuing = chain
    return (
        write_file(tmp_path / "root.pem", ca_certificate_pem(root)),
        write_file(tmp_path / "issuing.pem", ca_certificate_pem(issuing)),
    )


def test_a_leaf_is_good_then_revoked_and_a_serial_never_issued_unknown(
    asker: Asker, ca_files: tuple[Path, Path], alice_client: IssuedClient, bob_client: IssuedClient
) -> None:
    _root, issuing = ca_files
    alice = str(alice_client.cert_path)
    assert asker.status(issuing, "-cert", alice) == "good"
    assert asker.status(issuing, "-cert", str(bob_client.cert_path)) == "good"

    revoke(alice_client.certificate)

    assert asker.status(issuing, "-cert", alice) == "revoked"
    assert "Reason: keyCompromise" in asker.run(issuing, "-cert", alice)
    assert asker.status(issuing, "-cert", str(bob_client.cert_path)) == "good"
    assert asker.status(issuing, "-serial", never_issued()) == "unknown"


def test_the_issuing_ca_is_good_then_revoked_asked_of_its_root(
    asker: Asker, chain: list[CertificateAuthority], ca_files: tuple[Path, Path]
) -> None:
    root, issuing = ca_files
    assert asker.status(root, "-cert", str(issuing)) == "good"
    assert asker.status(root, "-serial", never_issued()) == "unknown"

    call_command("revoke_ca", chain[-1].slug, "--reason", "ca_compromise", stdout=StringIO())

    assert asker.status(root, "-cert", str(issuing)) == "revoked"
    assert "Reason: cACompromise" in asker.run(root, "-cert", str(issuing))
    assert asker.status(root, "-serial", never_issued()) == "unknown"


def test_a_ca_the_portal_does_not_host_is_unauthorized(asker: Asker, tmp_path: Path) -> None:
    foreign = make_server_certificate(tmp_path / "foreign")  # a throwaway CA and a certificate it signed
    output = asker.run(foreign.ca_path, "-cert", str(foreign.cert_path))
    assert "Responder Error: unauthorized (6)" in output, output
