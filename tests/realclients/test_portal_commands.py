"""The commands the pages show, run for real with openssl: make a key and CSR, submit it, download the
certificate, build the .p12 files, and check that serial and fingerprint match what openssl prints."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from ca.models import CertificateAuthority
from enroll import flows
from enroll.models import EnrollmentRequest
from tests.conftest import need_program

pytestmark = [pytest.mark.real_client, pytest.mark.django_db]


def commands_on(page: str) -> list[str]:
    return [html.unescape(code) for code in re.findall(r"<code>(.*?)</code>", page, flags=re.DOTALL)]


def shell(command: str, cwd: Path) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def test_the_shown_commands_work_from_key_to_p12(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    tmp_path: Path,
) -> None:
    need_program("openssl")
    client.force_login(alice)

    new_page = client.get(reverse("portal:request-new")).content.decode()
    make_key = next(c for c in commands_on(new_page) if c.startswith("openssl req -new -newkey ec"))
    shell(make_key, tmp_path)
    assert (tmp_path / "alice.key").exists()
    upload = SimpleUploadedFile("alice.csr", (tmp_path / "alice.csr").read_bytes())
    assert client.post(reverse("portal:request-new"), {"csr_file": upload}).status_code == 302
    request = EnrollmentRequest.objects.get(owner=alice)
    issued = flows.approve(request_id=request.pk, by=admin_user)
    assert issued.certificate is not None
    certificate = issued.certificate

    detail = client.get(reverse("portal:certificate-detail", args=[certificate.pk])).content.decode()
    stem = f"alice-{certificate.serial[:8].lower()}"
    for fmt, name in (("pem", f"{stem}.pem"), ("chain", f"{stem}.chain.pem")):
        response = client.get(reverse("portal:certificate-download", args=[certificate.pk, fmt]))
        assert f'filename="{name}"' in response["Content-Disposition"]
        (tmp_path / name).write_bytes(response.content)

    shown = commands_on(detail)
    for p12 in (c for c in shown if c.startswith("openssl pkcs12 -export")):
        shell(f"{p12} -passout pass:test-password", tmp_path)
    for name, options in ((f"{stem}.p12", ""), (f"{stem}-legacy.p12", "-legacy")):  # named like the downloads
        listing = shell(f"openssl pkcs12 {options} -in {name} -passin pass:test-password -nokeys", tmp_path)
        assert "subject=O = Enroll Portal, CN = alice" in listing
        assert listing.count("BEGIN CERTIFICATE") == 2, "the certificate and its CA"
    belong = next(c for c in shown if c.startswith("openssl x509 -in") and "sha256" in c).splitlines()
    assert len(belong) == 2
    assert shell(belong[0], tmp_path).split()[-1] == shell(belong[1], tmp_path).split()[-1]

    printed = shell(f"openssl x509 -in {stem}.pem -noout -serial -fingerprint -sha256", tmp_path)
    serial = re.search(r"serial=([0-9A-F]+)", printed)
    fingerprint = re.search(r"Fingerprint=([0-9A-F:]+)", printed)
    assert serial is not None
    assert fingerprint is not None
    assert serial.group(1) in detail
    assert fingerprint.group(1) in detail
