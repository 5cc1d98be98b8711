"""The management commands: thin wrappers whose last output line is what a script needs."""

from __future__ import annotations

import datetime as dt
import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings

from ca.models import Certificate, CertificateAuthority, CrlPublication, RevocationReason
from ca.pki.profiles import build_ca_certificate, build_ca_name
from ca.pki.serials import format_serial_colons, new_serial
from ca.services.authorities import create_ca
from ca.services.keys import key_path
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.cli import ManagePy
from tests.conftest import FIXTURES, fixture_bytes, make_csr

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    """Run a command in-process; return its output lines."""
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def run_binary(*args: str) -> bytes:
    """Run a command whose output is bytes (export_cert); return them."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    call_command(*args, stdout=out)
    out.flush()
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue()


def latest_crl(ca: CertificateAuthority) -> CrlPublication:
    return CrlPublication.objects.filter(ca=ca).latest()


@pytest.fixture
def csr_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.csr"
    path.write_bytes(make_csr())
    return path


# --- submit_csr ------------------------------------------------------------------------------------


def test_submit_csr_prints_the_request_id_last(alice: User, csr_file: Path) -> None:
    lines = run("submit_csr", "--user", "alice", str(csr_file))

    request = EnrollmentRequest.objects.get()
    assert lines[-1] == str(request.pk)
    assert request.owner == alice
    assert request.status == RequestStatus.SUBMITTED


def test_submit_csr_reads_standard_input_for_a_dash(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(fixture_bytes("openssl-rsa2048.csr.der"))))

    lines = run("submit_csr", "--user", "alice", "-")

    request = EnrollmentRequest.objects.get(pk=int(lines[-1]))
    assert bytes(request.request_der) == fixture_bytes("openssl-rsa2048.csr.der")
    assert request.key_description == "RSA 2048"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("selfsigned-cert.pem", "This is a certificate, not a certificate request"),
        ("openssl-rsa1024.csr.pem", "1024"),
        ("openssl-ec-p256.key.pem", "This is a private key"),
        ("tampered-signature.csr.pem", "signature does not match"),
    ],
)
def test_submit_csr_refuses_a_bad_file_with_the_reason_and_stores_nothing(
    alice: User, name: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message) as error:
        run("submit_csr", "--user", "alice", str(FIXTURES / name))

    assert "\n" not in str(error.value)
    assert not EnrollmentRequest.objects.exists()


def test_submit_csr_refuses_an_oversized_file(alice: User, tmp_path: Path) -> None:
    big = tmp_path / "big.csr"
    big.write_bytes(make_csr() + b" " * 20000)

    with pytest.raises(CommandError, match="at most 16 KiB"):
        run("submit_csr", "--user", "alice", str(big))


def test_submit_csr_refuses_an_unknown_user(csr_file: Path) -> None:
    with pytest.raises(CommandError, match="no user 'mallory'"):
        run("submit_csr", "--user", "mallory", str(csr_file))


def test_submit_csr_refuses_a_missing_file(alice: User, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No such file"):
        run("submit_csr", "--user", "alice", str(tmp_path / "nothing.csr"))


# --- approve and reject ----------------------------------------------------------------------------


def submit(user: str = "alice") -> int:
    return flows.submit_csr(owner=User.objects.get(username=user), data=make_csr()).pk


def test_approve_prints_the_serial_in_hex_last(ca: CertificateAuthority, alice: User) -> None:
    request_id = submit()

    lines = run("approve", str(request_id))

    request = EnrollmentRequest.objects.get(pk=request_id)
    assert request.status == RequestStatus.ISSUED
    assert request.certificate is not None
    serial = lines[-1]
    assert serial == request.certificate.serial
    assert serial == serial.upper()
    assert int(serial, 16) == request.certificate.x509.serial_number


def test_approve_reports_a_failure_and_the_request_ends_failed(ca: CertificateAuthority, alice: User) -> None:
    request_id = submit()
    key_path(ca).unlink()

    with pytest.raises(CommandError, match="Issuing failed"):
        run("approve", str(request_id))

    assert EnrollmentRequest.objects.get(pk=request_id).status == RequestStatus.FAILED
    assert not Certificate.objects.exists()


def test_approve_refuses_a_request_twice(ca: CertificateAuthority, alice: User) -> None:
    request_id = submit()
    run("approve", str(request_id))

    with pytest.raises(CommandError, match="only submitted requests"):
        run("approve", str(request_id))

    assert Certificate.objects.count() == 1


def test_approve_refuses_an_unknown_request(ca: CertificateAuthority) -> None:
    with pytest.raises(CommandError, match="no request #999"):
        run("approve", "999")


def test_reject_records_the_reason(alice: User) -> None:
    request_id = submit()

    lines = run("reject", str(request_id), "--reason", "Use your work account")

    request = EnrollmentRequest.objects.get(pk=request_id)
    assert lines[-1] == f"rejected request #{request_id}"
    assert request.status == RequestStatus.REJECTED
    assert request.reason == "Use your work account"


def test_reject_needs_a_reason(alice: User) -> None:
    request_id = submit()

    with pytest.raises(CommandError, match="reason"):
        run("reject", str(request_id), "--reason", "  ")
    with pytest.raises(CommandError, match="--reason"):
        run("reject", str(request_id))

    assert EnrollmentRequest.objects.get(pk=request_id).status == RequestStatus.SUBMITTED


# --- revoke and publish_crl ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "spelling",
    [
        str.lower,
        lambda s: format_serial_colons(serial=int(s, 16)).lower(),
        lambda s: format_serial_colons(serial=int(s, 16)),
    ],
    ids=["lowercase", "colons-lowercase", "colons-uppercase"],
)
def test_revoke_takes_the_serial_in_any_spelling_and_prints_the_new_crl_number_last(
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    spelling: Callable[[str], str],
) -> None:
    certificate = issue_for(alice)
    before = latest_crl(ca).number

    lines = run("revoke", spelling(certificate.serial), "--reason", "key_compromise")

    publication = latest_crl(ca)
    assert lines[-1] == str(publication.number)
    assert publication.number > before
    crl = x509.load_der_x509_crl(bytes(publication.der))
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_int)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    certificate.refresh_from_db()
    assert certificate.revocation.reason == RevocationReason.KEY_COMPROMISE


@pytest.mark.django_db(transaction=True)
def test_revoke_says_the_certificate_is_revoked_when_only_the_crl_failed(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)
    before = latest_crl(ca).number
    key_path(ca).unlink()

    with pytest.raises(CommandError, match=f"Certificate {certificate.serial} is revoked, but.*publish_crl"):
        run("revoke", certificate.serial, "--reason", "key_compromise")

    assert Certificate.objects.get(pk=certificate.pk).revocation.reason == RevocationReason.KEY_COMPROMISE
    assert latest_crl(ca).number == before


def test_revoke_refuses_a_certificate_revoked_already(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)

    with pytest.raises(CommandError, match="revoked already"):
        run("revoke", certificate.serial, "--reason", "key_compromise")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0A0B0C", "--reason", "superseded"], "No certificate with serial 0A0B0C"),
        (["not-hex", "--reason", "superseded"], "not a serial number"),
        (["{serial}", "--reason", "unspecified"], "invalid choice"),
        (["{serial}", "--reason", "because"], "invalid choice"),
        (["{serial}"], "--reason"),
        (["{serial}", "--reason", "superseded", "--ca", "nope"], "no CA with the slug 'nope'"),
    ],
)
def test_revoke_refuses_bad_arguments_with_the_reason(
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    args: list[str],
    message: str,
) -> None:
    certificate = issue_for(alice)

    with pytest.raises(CommandError, match=message):
        run("revoke", *(a.format(serial=certificate.serial) for a in args))

    assert not hasattr(Certificate.objects.get(pk=certificate.pk), "revocation")


def test_publish_crl_prints_the_new_number(ca: CertificateAuthority) -> None:
    before = latest_crl(ca).number

    lines = run("publish_crl", "--ca", ca.slug)

    assert lines[-1] == str(latest_crl(ca).number)
    assert int(lines[-1]) > before
    assert int(run("publish_crl", "--ca", ca.slug)[-1]) > int(lines[-1])


def test_publish_crl_without_ca_publishes_for_every_ca(ca: CertificateAuthority) -> None:
    other = create_ca(name="Other")

    lines = run("publish_crl")

    assert sorted(lines) == sorted(f"{c.slug} {latest_crl(c).number}" for c in (ca, other))


def test_publish_crl_if_stale_keeps_a_fresh_crl(ca: CertificateAuthority) -> None:
    number = latest_crl(ca).number

    assert run("publish_crl", "--ca", ca.slug, "--if-stale")[-1] == str(number)
    assert CrlPublication.objects.filter(ca=ca).count() == 1


def test_publish_crl_reports_a_missing_key(ca: CertificateAuthority) -> None:
    key_path(ca).unlink()

    with pytest.raises(CommandError, match="cannot be read"):
        run("publish_crl", "--ca", ca.slug)


@pytest.mark.parametrize(("args", "message"), [(["--ca", "nope"], "no CA with the slug"), ([], "no CA yet")])
def test_publish_crl_refuses_without_a_ca(db: None, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("publish_crl", *args)


# --- export_cert -----------------------------------------------------------------------------------


def test_export_cert_writes_each_format_to_standard_output(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)
    serial = format_serial_colons(serial=certificate.serial_int).lower()

    pem = run_binary("export_cert", serial, "--format", "pem")
    der = run_binary("export_cert", serial, "--format", "der")
    chain = run_binary("export_cert", serial, "--format", "chain")
    p7 = run_binary("export_cert", serial, "--format", "pkcs7")

    assert x509.load_pem_x509_certificate(pem) == certificate.x509
    assert der == bytes(certificate.der)
    assert x509.load_pem_x509_certificates(chain) == [certificate.x509, ca.certificate]
    assert set(pkcs7.load_pem_pkcs7_certificates(p7)) == {certificate.x509, ca.certificate}
    assert run_binary("export_cert", certificate.serial) == pem, "PEM is the default"


def test_export_cert_refuses_an_unknown_serial_or_format(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)

    with pytest.raises(CommandError, match="No certificate"):
        run_binary("export_cert", "0A0B0C")
    with pytest.raises(CommandError, match="invalid choice"):
        run_binary("export_cert", certificate.serial, "--format", "pfx")


# --- init_ca and import_ca -------------------------------------------------------------------------


def test_init_ca_prints_the_slug_last_and_the_first_ca_is_the_default(db: None) -> None:
    lines = run("init_ca", "--name", "Example Client CA", "--days", "90")

    ca = CertificateAuthority.objects.get()
    assert lines[-1] == ca.slug == "example-client-ca"
    assert ca.is_default
    assert "issues client certificates" in lines[0]
    assert (ca.not_after - ca.not_before) == dt.timedelta(days=90, minutes=5)


def test_init_ca_with_parent_makes_an_intermediate(db: None) -> None:
    root_slug = run("init_ca", "--name", "Root", "--key-type", "ec-p384")[-1]

    slug = run("init_ca", "--name", "Issuing", "--parent", root_slug, "--slug", "issuing")[-1]

    root = CertificateAuthority.objects.get(slug=root_slug)
    intermediate = CertificateAuthority.objects.get(slug=slug)
    assert slug == "issuing"
    assert intermediate.parent == root
    intermediate.certificate.verify_directly_issued_by(root.certificate)
    assert root.key_type == "ec-p384"
    assert root.is_default
    assert not intermediate.is_default


def test_init_ca_default_moves_the_default(db: None) -> None:
    first = run("init_ca", "--name", "First")[-1]

    second = run("init_ca", "--name", "Second", "--default")[-1]

    assert list(CertificateAuthority.objects.filter(is_default=True).values_list("slug", flat=True)) == [
        second
    ]
    assert first != second


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "X", "--parent", "nope"], "no CA with the slug 'nope'"),
        (["--name", "X", "--days", "0"], "--days"),
        (["--name", "X", "--key-type", "dsa-1024"], "invalid choice"),
        (["--name", "Root", "--slug", "root"], "exists already"),
    ],
)
def test_init_ca_refuses_bad_arguments(db: None, args: list[str], message: str) -> None:
    create_ca(name="Root", slug="root")

    with pytest.raises(CommandError, match=message):
        run("init_ca", *args)

    assert CertificateAuthority.objects.count() == 1


def write_external_ca(directory: Path, *, key_password: bytes | None = None) -> tuple[Path, Path]:
    """An existing CA's certificate and key files, as another tool would have left them."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(tz=dt.UTC)
    cert = build_ca_certificate(
        subject=build_ca_name(common_name="External Client CA", organization="Example Org"),
        key=key,
        serial=new_serial(),
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=30),
    )
    encryption = (
        serialization.BestAvailableEncryption(key_password) if key_password else serialization.NoEncryption()
    )
    cert_file, key_file = directory / "external.crt", directory / "external.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_file, key_file


@pytest.mark.parametrize("encrypted", [False, True], ids=["unencrypted-key", "encrypted-key"])
def test_import_ca_prints_the_slug_last(
    ca: CertificateAuthority, tmp_path: Path, settings: Settings, encrypted: bool
) -> None:
    passphrase = settings.ENROLL_CA_PASSPHRASE.encode() if encrypted else None
    cert_file, key_file = write_external_ca(tmp_path, key_password=passphrase)

    lines = run("import_ca", "--cert", str(cert_file), "--key", str(key_file), "--default")

    imported = CertificateAuthority.objects.get(slug=lines[-1])
    assert lines[-1] == "external-client-ca"
    assert imported.certificate == x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert imported.is_default
    assert key_path(imported).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_import_ca_refuses_a_key_that_does_not_match(db: None, tmp_path: Path) -> None:
    cert_file, _ = write_external_ca(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = write_external_ca(other)

    with pytest.raises(CommandError, match="does not belong"):
        run("import_ca", "--cert", str(cert_file), "--key", str(other_key))

    assert not CertificateAuthority.objects.exists()


def test_import_ca_refuses_a_missing_file(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No such file"):
        run("import_ca", "--cert", str(tmp_path / "ca.crt"), "--key", str(tmp_path / "ca.key"))


# --- the real command line, end to end -------------------------------------------------------------


def test_the_command_line_end_to_end_with_exit_status_and_one_line_reasons(
    tmp_path: Path, new_installation: Callable[[Path], ManagePy]
) -> None:
    """One fresh installation driven only through manage.py, as an operator's script would (its set-up in
    one process; every command whose exit status or reason is checked in a process of its own)."""
    cli = new_installation(tmp_path)
    manage, ok, refused = cli.run, cli.ok, cli.refused

    slug, _ = cli.batch(
        ("init_ca", "--name", "E2E Client CA"),
        (
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('erin', 'erin@example.com', 'erin-password-123')",
        ),
    )
    assert slug == "e2e-client-ca"

    stderr = refused("submit_csr", "--user", "erin", str(FIXTURES / "selfsigned-cert.pem"))
    assert "certificate, not a certificate request" in stderr
    key_pem = fixture_bytes("openssl-ec-p256.key.pem")
    stderr = refused("submit_csr", "--user", "erin", "-", stdin=key_pem)
    assert "private key" in stderr
    assert key_pem.splitlines()[1].decode() not in stderr, "key material is never echoed"
    refused("submit_csr", "--user", "nobody", "-", stdin=make_csr())

    request_id = ok("submit_csr", "--user", "erin", "-", stdin=make_csr())
    assert request_id.isdigit()
    serial = ok("approve", request_id)
    assert "approve" in refused("approve", request_id)

    exported = manage("export_cert", serial, "--format", "der")
    assert exported.returncode == 0
    cert = x509.load_der_x509_certificate(exported.stdout)
    assert cert.serial_number == int(serial, 16)
    assert cert.subject.rfc4514_string() == "CN=erin,O=Enroll Portal"

    crl_number = ok("revoke", format_serial_colons(serial=int(serial, 16)).lower(), "--reason", "superseded")
    assert int(ok("publish_crl", "--ca", "e2e-client-ca")) > int(crl_number)
    assert "revoked already" in refused("revoke", serial, "--reason", "superseded")
