"""The SPKAC commands for scripted fleets: spkac_challenge and submit_spkac (in process and end to end)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from ca.models import CertificateAuthority
from enroll import challenges
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus, SpkacChallenge
from tests.cli import ManagePy
from tests.spkac_tools import key_file, spkac

pytestmark = [pytest.mark.django_db, pytest.mark.real_client]


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def write_spkac(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "request.spkac"
    path.write_text(line + "\n")
    return path


def test_spkac_challenge_prints_a_fresh_command_line_challenge_last(alice: User) -> None:
    lines = run("spkac_challenge", "--user", "alice")

    challenge = SpkacChallenge.objects.get()
    assert lines[-1] == challenge.value
    assert challenge.owner == alice
    assert challenge.binding == challenges.COMMAND_LINE_BINDING
    assert f"-challenge {challenge.value} -digest sha256" in lines[0]
    assert run("spkac_challenge", "--user", "alice")[-1] != challenge.value


def test_spkac_challenge_refuses_an_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="no user 'mallory'"):
        run("spkac_challenge", "--user", "mallory")


def test_challenge_openssl_submit_approve_and_download_as_x509_user_cert(
    alice: User, ca: CertificateAuthority, tmp_path: Path
) -> None:
    challenge = run("spkac_challenge", "--user", "alice")[-1]
    path = write_spkac(tmp_path, spkac(key_file("rsa2048"), challenge))

    request_id = run("submit_spkac", "--user", "alice", str(path))[-1]
    serial = run("approve", request_id)[-1]

    request = EnrollmentRequest.objects.get(pk=int(request_id))
    assert request.kind == RequestKind.SPKAC
    assert request.status == RequestStatus.ISSUED
    assert request.certificate is not None
    assert request.certificate.serial == serial
    client = Client()
    client.force_login(alice)
    response = client.get(
        reverse("portal:certificate-download", args=[request.certificate.pk, "x509-user-cert"])
    )
    assert response["Content-Type"] == "application/x-x509-user-cert"
    cert = x509.load_der_x509_certificate(response.content)
    assert cert.serial_number == int(serial, 16)
    assert cert.subject.rfc4514_string() == "CN=alice,O=Enroll Portal"


def test_submit_spkac_reads_standard_input_for_a_dash(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    line = spkac(key_file("ec-p256"), run("spkac_challenge", "--user", "alice")[-1])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line.encode() + b"\n")))

    request_id = run("submit_spkac", "--user", "alice", "-")[-1]

    assert EnrollmentRequest.objects.get(pk=int(request_id)).key_description == "ECDSA P-256"


def test_submit_spkac_refuses_a_challenge_from_a_web_session(alice: User, tmp_path: Path) -> None:
    web = challenges.issue(owner=alice, binding="a-web-session-token").value
    path = write_spkac(tmp_path, spkac(key_file("ec-p256"), web))

    with pytest.raises(CommandError, match="another session") as error:
        run("submit_spkac", "--user", "alice", str(path))

    assert "\n" not in str(error.value)
    assert not EnrollmentRequest.objects.exists()


def test_submit_spkac_refuses_another_users_challenge(alice: User, bob: User, tmp_path: Path) -> None:
    bobs = run("spkac_challenge", "--user", "bob")[-1]
    path = write_spkac(tmp_path, spkac(key_file("ec-p256"), bobs))

    with pytest.raises(CommandError, match="not given to you"):
        run("submit_spkac", "--user", "alice", str(path))


def test_submit_spkac_refuses_md5_naming_the_fix(alice: User, tmp_path: Path) -> None:
    path = write_spkac(
        tmp_path, spkac(key_file("rsa2048"), run("spkac_challenge", "--user", "alice")[-1], digest=None)
    )

    with pytest.raises(CommandError, match="-digest sha256"):
        run("submit_spkac", "--user", "alice", str(path))


def test_submit_spkac_refuses_a_replay(alice: User, tmp_path: Path) -> None:
    path = write_spkac(tmp_path, spkac(key_file("ec-p256"), run("spkac_challenge", "--user", "alice")[-1]))
    run("submit_spkac", "--user", "alice", str(path))

    with pytest.raises(CommandError, match="used already"):
        run("submit_spkac", "--user", "alice", str(path))

    assert EnrollmentRequest.objects.count() == 1


def test_submit_spkac_refuses_a_missing_file(alice: User, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No such file"):
        run("submit_spkac", "--user", "alice", str(tmp_path / "nothing.spkac"))


def test_export_cert_writes_the_x509_user_cert_form(
    alice: User, ca: CertificateAuthority, tmp_path: Path
) -> None:
    path = write_spkac(tmp_path, spkac(key_file("ec-p256"), run("spkac_challenge", "--user", "alice")[-1]))
    serial = run("approve", run("submit_spkac", "--user", "alice", str(path))[-1])[-1]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")

    call_command("export_cert", serial, "--format", "x509-user-cert", stdout=out)

    out.flush()
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    assert x509.load_der_x509_certificate(buffer.getvalue()).serial_number == int(serial, 16)


def test_the_real_command_line_exits_1_with_a_one_line_reason(
    tmp_path: Path, new_installation: Callable[[Path], ManagePy]
) -> None:
    """manage.py as a fleet's script runs it: challenge, openssl spkac, submit, approve; refusals exit 1
    (the installation's set-up in one process, each command checked in a process of its own)."""
    cli = new_installation(tmp_path)
    manage, ok, refused = cli.run, cli.ok, cli.refused

    cli.batch(
        ("init_ca", "--name", "SPKAC E2E CA"),
        (
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('fleet', 'fleet@example.com', 'fleet-password-123')",
        ),
    )

    challenge = ok("spkac_challenge", "--user", "fleet")
    assert "MD5" in refused(
        "submit_spkac",
        "--user",
        "fleet",
        "-",
        stdin=spkac(key_file("rsa2048"), challenge, digest=None).encode(),
    )
    line = spkac(key_file("rsa2048"), challenge).encode()
    request_id = ok("submit_spkac", "--user", "fleet", "-", stdin=line)
    assert request_id.isdigit()
    assert "used already" in refused("submit_spkac", "--user", "fleet", "-", stdin=line)
    assert "not given to you" in refused(
        "submit_spkac", "--user", "fleet", "-", stdin=spkac(key_file("ec-p256"), "0" * 40).encode()
    )
    serial = ok("approve", request_id)

    exported = manage("export_cert", serial, "--format", "x509-user-cert")
    assert exported.returncode == 0
    assert (
        x509.load_der_x509_certificate(exported.stdout).subject.rfc4514_string() == "CN=fleet,O=Enroll Portal"
    )
