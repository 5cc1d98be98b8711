"""Issued certificates and CRLs checked by real tools: pkilint and `openssl verify`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.pki.keys import CAKeyType
from ca.services.authorities import create_ca
from ca.services.crl import current_crl, publish_crl
from ca.services.export import ca_certificate_pem, crl_pem, export_certificate
from ca.services.revocation import revoke_certificate
from tests.conftest import make_csr, need_program

pytestmark = [pytest.mark.real_client, pytest.mark.django_db]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def lint_certificate(path: Path) -> subprocess.CompletedProcess[str]:
    return run(need_program("lint_pkix_cert"), "lint", "-s", "WARNING", str(path))


def lint_crl(path: Path) -> subprocess.CompletedProcess[str]:
    return run(need_program("lint_crl"), "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", str(path))


@pytest.mark.parametrize("key_type", [CAKeyType.EC_P256, CAKeyType.EC_P384, CAKeyType.RSA_3072])
def test_pkilint_finds_nothing_in_issued_certificates_and_crls(
    key_type: CAKeyType, alice: User, bob: User, issue_for: Callable[..., Certificate], tmp_path: Path
) -> None:
    ca = create_ca(name=f"Lint CA {key_type}", key_type=key_type, make_default=True)
    with_email = issue_for(alice)
    bob.email = ""
    bob.save()
    without_email = issue_for(bob)
    extra = [issue_for(alice) for _ in range(3)]
    revoke_certificate(
        certificate=with_email, reason=RevocationReason.KEY_COMPROMISE, invalidity_date=with_email.not_before
    )
    revoke_certificate(certificate=extra[0], reason=RevocationReason.UNSPECIFIED)
    revoke_certificate(certificate=extra[1], reason=RevocationReason.CERTIFICATE_HOLD)
    revoke_certificate(certificate=extra[2], reason=RevocationReason.CESSATION_OF_OPERATION)

    for name, certificate in (("with-email", with_email), ("without-email", without_email)):
        pem = export_certificate(certificate=certificate, fmt="pem").content
        result = lint_certificate(write(tmp_path / f"{name}.pem", pem))
        assert result.returncode == 0, result.stdout + result.stderr
    crl = current_crl(ca=ca)
    assert crl.entries == 4
    result = lint_crl(write(tmp_path / "crl.pem", crl_pem(crl)))
    assert result.returncode == 0, result.stdout + result.stderr
    empty = publish_crl(ca=create_ca(name="Empty CA", key_type=key_type))
    result = lint_crl(write(tmp_path / "empty.pem", crl_pem(empty)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_pkilint_finds_nothing_in_root_and_intermediate_certificates(db: None, tmp_path: Path) -> None:
    root = create_ca(name="Lint Root")
    intermediate = create_ca(name="Lint Issuing", parent=root)
    for ca in (root, intermediate):
        result = lint_certificate(write(tmp_path / f"{ca.slug}.pem", ca_certificate_pem(ca)))
        # pkilint's PKIX profile reports nothing at WARNING or above for a CA certificate either.
        assert result.returncode == 0, result.stdout + result.stderr


def _verify(
    tmp_path: Path, chain: list[CertificateAuthority], leaf: Certificate, *crl: bool
) -> subprocess.CompletedProcess[str]:
    bundle = write(tmp_path / "bundle.pem", b"".join(ca_certificate_pem(ca) for ca in chain))
    leaf_path = write(tmp_path / "leaf.pem", export_certificate(certificate=leaf, fmt="pem").content)
    args = [need_program("openssl"), "verify", "-purpose", "sslclient", "-CAfile", str(bundle)]
    if crl:
        crls = write(tmp_path / "crls.pem", b"".join(crl_pem(current_crl(ca=ca)) for ca in chain))
        args += ["-crl_check_all", "-CRLfile", str(crls)]
    return run(*args, str(leaf_path))


def test_openssl_accepts_the_certificate_and_refuses_it_once_revoked(
    alice: User, issue_for: Callable[..., Certificate], tmp_path: Path
) -> None:
    root = create_ca(name="Verify Root", key_type=CAKeyType.EC_P384)
    issuing = create_ca(name="Verify Issuing", parent=root, make_default=True)
    certificate = issue_for(alice, make_csr())
    other = issue_for(alice, make_csr())

    assert _verify(tmp_path, [root, issuing], certificate).returncode == 0
    ok = _verify(tmp_path, [root, issuing], certificate, True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith(": OK")

    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    refused = _verify(tmp_path, [root, issuing], certificate, True)
    assert refused.returncode != 0
    assert "error 23" in refused.stderr + refused.stdout
    assert "certificate revoked" in refused.stderr + refused.stdout
    still_ok = _verify(tmp_path, [root, issuing], other, True)
    assert still_ok.returncode == 0, still_ok.stdout + still_ok.stderr


def test_openssl_refuses_a_certificate_for_server_authentication(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate], tmp_path: Path
) -> None:
    certificate = issue_for(alice)
    bundle = write(tmp_path / "ca.pem", ca_certificate_pem(ca))
    leaf = write(tmp_path / "leaf.pem", export_certificate(certificate=certificate, fmt="pem").content)
    result = run(
        need_program("openssl"), "verify", "-purpose", "sslserver", "-CAfile", str(bundle), str(leaf)
    )
    assert result.returncode != 0
    assert "error 26" in result.stderr + result.stdout  # unsuitable certificate purpose
