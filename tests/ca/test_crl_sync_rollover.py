"""enroll-crl-sync --ca-bundle-url across a CA rollover: a new key generation is added to the front server's
CA file only when it chains to a CA the file trusts (through the link certificate), and its CRL joins the
bundle; anything in the download that does not chain is ignored with a warning."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pytest_django.fixtures import Settings

from ca import crlsync
from ca.models import CertificateAuthority, CrlPublication
from ca.pki.profiles import SubjectInfo
from ca.pki.rollover import CRL_LINE, is_link
from ca.services.authorities import create_ca
from ca.services.issuance import issue_certificate
from ca.services.rollover import Rollover, ca_bundle, rollover_ca
from tests.ca.test_crl_sync import Served, installed_crls, portal, reload_marker, reloads
from tests.helpers import make_csr, signed_by

__all__ = ["portal"]  # the fake portal fixture, shared with tests/ca/test_crl_sync.py

pytestmark = pytest.mark.django_db

PEM = serialization.Encoding.PEM


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(PEM)


def crl_pem(ca: CertificateAuthority) -> bytes:
    der = bytes(CrlPublication.objects.filter(ca=ca).latest().der)
    return x509.load_der_x509_crl(der).public_bytes(PEM)


def fingerprints(path: Path) -> list[str]:
    return [c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(path.read_bytes())]


class Front:
    """A front server's files: the CA file it trusts (the old generation only at first), its CRL bundle."""

    def __init__(self, tmp_path: Path, base: str, served: Served, old: CertificateAuthority) -> None:
        self.served = served
        self.base = base
        self.ca_file = tmp_path / "client-ca.pem"
        self.ca_file.write_bytes(pem(old.certificate))
        self.output = tmp_path / "client-crl.pem"
        self.reload, self.marker = reload_marker(tmp_path)
        self.config = crlsync.SyncConfig(
            urls=(f"{base}/pki/{old.slug}.crl.pem",),
            ca_file=self.ca_file,
            output=self.output,
            reload_command=self.reload,
            ca_bundle_url=f"{base}/pki/{old.slug}/bundle.pem",
        )

    def serve(self, *authorities: CertificateAuthority, bundle: bytes) -> None:
        for ca in authorities:
            self.served.bodies[f"/pki/{ca.slug}.crl.pem"] = crl_pem(ca)
        self.served.bodies[f"/pki/{authorities[0].slug}/bundle.pem"] = bundle

    def run(self) -> bool:
        changed, _installed = crlsync.sync_bundle(self.config)
        return changed


@pytest.fixture
def front(tmp_path: Path, portal: tuple[str, Served], settings: Settings, ca: CertificateAuthority) -> Front:
    base, served = portal
    settings.ENROLL_PUBLIC_URL = base  # the bundle's CRL lines point at the fake portal
    made = Front(tmp_path, base, served, ca)
    made.serve(ca, bundle=ca_bundle(ca))
    assert made.run()  # the front server as it ran before the rollover
    assert reloads(made.marker) == 1
    return made


def test_a_new_generation_that_chains_through_the_link_is_trusted_and_its_crl_installed(
    front: Front, ca: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    rolled = rollover_ca(ca=ca)
    front.serve(rolled.old, rolled.new, bundle=ca_bundle(rolled.old))
    assert front.run()
    # the new generation's certificate is added; the link certificates are not
    assert fingerprints(front.ca_file) == [rolled.old.fingerprint_sha256, rolled.new.fingerprint_sha256]
    assert not any(is_link(c) for c in x509.load_pem_x509_certificates(front.ca_file.read_bytes()))
    assert "chains to a CA this file trusted" in front.ca_file.read_text()
    old_crl, new_crl = installed_crls(front.output)
    assert signed_by(old_crl, rolled.old.certificate)
    assert signed_by(new_crl, rolled.new.certificate)
    assert reloads(front.marker) == 2
    assert "warning" not in capsys.readouterr().err
    # the next run changes nothing and reloads nothing
    assert not front.run()
    assert reloads(front.marker) == 2
    assert len(fingerprints(front.ca_file)) == 2
    # the report names both CRLs the server runs
    installed_state = crlsync.installed_from_state(front.output, front.config.urls)
    assert len(installed_state) == 2


def _foreign_root() -> CertificateAuthority:
    """A CA with the very same name as the trusted one, but a key nobody linked to it."""
    return create_ca(name="Test Root CA", slug="impostor", make_default=False)


def _bundle_with(*certificates: x509.Certificate, crl_url: str) -> bytes:
    return b"".join(f"{CRL_LINE}{crl_url}\n".encode() + pem(c) for c in certificates)


@pytest.mark.parametrize(
    "case",
    [
        "same-name-root-without-link",
        "new-generation-without-its-link",
        "link-signed-by-a-stranger",
        "client-certificate-of-the-trusted-ca",
    ],
)
def test_a_certificate_that_does_not_chain_is_ignored_with_a_warning_and_never_trusted(
    front: Front,
    ca: CertificateAuthority,
    case: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    before = front.ca_file.read_bytes()
    url = f"{front.base}/pki/other.crl.pem"
    if case == "same-name-root-without-link":
        offered = [_foreign_root().certificate]
    elif case == "new-generation-without-its-link":
        rolled = rollover_ca(ca=ca)
        offered = [rolled.new.certificate, rolled.new_signs_old]
    elif case == "link-signed-by-a-stranger":
        stranger = _foreign_root()
        second = rollover_ca(ca=stranger)  # a link from the stranger's key, under the trusted CA's name
        offered = [second.old_signs_new, second.new.certificate]
    else:
        issued = issue_certificate(
            request_der=make_csr(encoding=serialization.Encoding.DER),
            subject=SubjectInfo(common_name="alice"),
            owner=None,
            ca=ca,
        )
        offered = [issued.x509]
    front.served.bodies["/pki/other.crl.pem"] = b"never fetched"
    front.served.bodies[f"/pki/{ca.slug}/bundle.pem"] = ca_bundle(ca) + _bundle_with(*offered, crl_url=url)
    paths_before = len(front.served.requests)
    front.run()
    assert front.ca_file.read_bytes() == before
    err = capsys.readouterr().err
    assert err.count("warning") == len(offered)
    assert "does not chain to a CA in" in err
    assert len(front.served.requests) - paths_before == 2  # the bundle and the trusted CA's CRL only
    assert len(installed_crls(front.output)) == 1


def test_an_expired_trusted_ca_vouches_for_nothing() -> None:
    now = dt.datetime.now(tz=dt.UTC)
    old = create_ca(name="Short CA", slug="short", days=1)
    rolled: Rollover = rollover_ca(ca=old)
    later = now + dt.timedelta(days=2)
    admitted, ignored = crlsync.admit_ca_certificates(
        [rolled.old_signs_new, rolled.new.certificate], trusted=[old.certificate], now=later
    )
    assert admitted == []
    assert len(ignored) == 2
    admitted, ignored = crlsync.admit_ca_certificates(
        [rolled.new.certificate, rolled.old_signs_new], trusted=[old.certificate], now=now
    )
    assert admitted == [rolled.old_signs_new, rolled.new.certificate]  # the link first, then through it
    assert ignored == []


def test_a_bundle_url_that_is_not_http_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        crlsync.main(
            ["--url", "http://x/a.crl", "--ca-file", "a", "--output", "b", "--ca-bundle-url", "file:///etc/x"]
        )
    assert "--ca-bundle-url" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "holds no certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "truncated"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "damaged certificate"),
        ("é".encode(), "not PEM text"),
    ],
)
def test_a_bad_bundle_is_one_line_and_leaves_the_files(
    front: Front, ca: CertificateAuthority, body: bytes, message: str
) -> None:
    before = (front.ca_file.read_bytes(), front.output.read_bytes())
    front.served.bodies[f"/pki/{ca.slug}/bundle.pem"] = body
    with pytest.raises(crlsync.SyncError, match=message):
        front.run()
    assert (front.ca_file.read_bytes(), front.output.read_bytes()) == before


def test_a_failed_reload_puts_the_previous_ca_file_and_crl_bundle_back(
    front: Front, ca: CertificateAuthority
) -> None:
    before = (front.ca_file.read_bytes(), front.output.read_bytes())
    rolled = rollover_ca(ca=ca)
    front.serve(rolled.old, rolled.new, bundle=ca_bundle(rolled.old))
    front.config = dataclasses.replace(front.config, reload_command="false")
    with pytest.raises(crlsync.InstallFailed, match="the previous CA file was put back"):
        front.run()
    assert (front.ca_file.read_bytes(), front.output.read_bytes()) == before


def test_a_front_server_set_up_after_the_rollover_trusts_the_old_generation_through_the_other_link(
    ca: CertificateAuthority,
) -> None:
    rolled = rollover_ca(ca=ca)
    offered = x509.load_pem_x509_certificates(ca_bundle(rolled.new))
    admitted, ignored = crlsync.admit_ca_certificates(
        offered, trusted=[rolled.new.certificate], now=dt.datetime.now(tz=dt.UTC)
    )
    assert ignored == []
    assert [c for c in admitted if not is_link(c)] == [rolled.old.certificate]  # through new-signs-old
