"""SCEP (RFC 8894) for real: Debian's SCEP clients against the live portal at ``/scep``.

- micromdm's ``scepclient`` (Debian package ``scep``): SHA-1 and single DES, whatever GetCACaps says, and an
  RSA RA it must be told by fingerprint (the default CA is EC). It enrolls with a pre-approved code (the
  certificate at once); with the owner's own code its request waits for an approver: scepclient re-sends
  the identical PKCSReq every 30 s, which the portal treats as a poll, so the test stops it once the
  request is waiting, approves it in the flow and runs it again (same key, same stored request, same
  transactionID): that poll brings the certificate, without waiting 30 s. It renews with its certificate
  (RenewalReq). A wrong, reused or multi-use code gets a FAILURE and nothing is issued. An RSA CA, which
  decrypts and signs itself (no RA), enrolls it too.
- certmonger's SCEP helper ``scep-submit`` (the daemon needs D-Bus): GetCACaps, GetCACert (RA and CA), and
  PKIOperation with a pkiMessage built as the certmonger daemon builds it (AES-256, SHA-256, RSA-4096, so
  the GET is over 5 KB; the request's CN a PrintableString holding ``_``): it verifies the reply's
  signature and prints the envelope, which the device's key opens. An owner's code gives PENDING first,
  then the certificate once approved (CertPoll); it renews (RenewalReq), and a wrong code is rejected.

Every certificate verifies with ``openssl verify`` against the chain, passes pkilint, and carries the
account's subject, whatever the client asked for. Last, the portal under gunicorn, run as production runs
it (``--limit-request-line 8190``): certmonger's long GET reaches the portal (with gunicorn's default 4094
it gets "URI Too Long").
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from django.contrib.auth.models import User
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority
from ca.pki import scep
from ca.pki.keys import CAKeyType
from ca.services.authorities import create_ca
from enroll import flows
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus
from tests.cli import ManagePy
from tests.harness.gunicorn import PortalInstance
from tests.harness.programs import need_program
from tests.pki.certmonger import certmonger_csr

pytestmark = [pytest.mark.real_client, pytest.mark.real_server, pytest.mark.django_db(transaction=True)]

SCEP_SUBMIT = "/usr/lib/certmonger/scep-submit"


def fetch(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (the live test server)
        return answer.headers.get_content_type(), answer.read()


def ca_ra_certificates(url: str, folder: Path) -> tuple[list[x509.Certificate], str]:
    """GetCACert: the RA and CA certificates (saved as chain.pem, without the RA) and the RA's SHA-256."""
    content_type, body = fetch(f"{url}?operation=GetCACert")
    assert content_type == "application/x-x509-ca-ra-cert"
    certificates = pkcs7.load_der_pkcs7_certificates(body)
    [ra] = [
        cert
        for cert in certificates
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ]
    cas = [cert for cert in certificates if cert is not ra]
    usage = ra.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment
    assert usage.digital_signature
    chain = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in cas)
    (folder / "chain.pem").write_bytes(chain)
    (folder / "ra.pem").write_bytes(ra.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.pem").write_bytes(cas[0].public_bytes(serialization.Encoding.PEM))
    return [ra, *cas], hashlib.sha256(ra.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_issued(folder: Path, path: Path, owner: User) -> Certificate:
    """It verifies against the chain (``folder``/chain.pem), pkilint finds nothing, the subject is the
    account's (not what the client asked for); its record."""
    pem = path.read_bytes()
    verified = subprocess.run(
        [need_program("openssl"), "verify", "-CAfile", str(folder / "chain.pem"), str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lint = subprocess.run(
        [need_program("lint_pkix_cert"), "lint", "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    certificate = x509.load_pem_x509_certificate(pem)
    row = Certificate.objects.get(fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex())
    assert row.owner == owner
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == owner.get_username()
    assert not certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)  # the client's is ignored
    return row


# --- micromdm's scepclient -----------------------------------------------------------------------------


def scepclient_command(folder: Path, url: str, *, code: str, fingerprint: str) -> list[str]:
    """``scepclient`` in the device's folder, with its key ``device.key`` (made by it the first time, and
    its request kept as csr.pem beside it) and certificate ``device.pem`` (written once issued)."""
    folder.mkdir(exist_ok=True)
    return [
        need_program("scepclient"),
        *("-server-url", url, "-challenge", code, "-ca-fingerprint", fingerprint),
        *("-private-key", str(folder / "device.key"), "-certificate", str(folder / "device.pem")),
        *("-cn", "asks-for-this-name", "-country", "DE", "-keySize", "2048", "-debug"),
    ]


def scepclient(folder: Path, url: str, *, code: str, fingerprint: str) -> subprocess.CompletedProcess[str]:
    command = scepclient_command(folder, url, code=code, fingerprint=fingerprint)
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=60, check=False)


def wait_for_request(code_id: int, *, seconds: float = 30) -> EnrollmentRequest:
    """The request a device made with the code, once stored (the client is still running)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = EnrollmentRequest.objects.filter(enrollment_code_id=code_id).first()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError("the client's request never arrived")


def test_scepclient_enrolls_waits_for_approval_and_renews(
    live_server: LiveServer, ca: CertificateAuthority, alice: User, admin_user: User, tmp_path: Path
) -> None:
    url = f"{live_server.url}/scep"
    _certificates, fingerprint = ca_ra_certificates(url, tmp_path)

    # A code an approver made for alice's router: the certificate at once.
    router_code, code = flows.create_enrollment_code(owner=alice, created_by=admin_user, device_name="router")
    assert router_code.pre_approved
    router = tmp_path / "router"
    done = scepclient(router, url, code=code, fingerprint=fingerprint)
    assert done.returncode == 0, done.stdout + done.stderr
    first = check_issued(tmp_path, router / "device.pem", alice)
    assert first.device_name == "router"
    assert EnrollmentRequest.objects.get(certificate=first).kind == RequestKind.SCEP

    # Run again with its certificate: scepclient sends a RenewalReq signed with it; a new certificate.
    issued = Certificate.objects.count()
    renewed = scepclient(router, url, code="", fingerprint=fingerprint)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    second = check_issued(tmp_path, router / "device.pem", alice)
    assert second.serial != first.serial
    assert second.subject == first.subject
    assert EnrollmentRequest.objects.get(certificate=second).renewal_of == first
    assert Certificate.objects.count() == issued + 1

    # The same code on another device (single use): a FAILURE, nothing issued.
    thief = scepclient(tmp_path / "thief", url, code=code, fingerprint=fingerprint)
    assert thief.returncode != 0
    assert "failInfo: badRequest" in thief.stdout, thief.stdout + thief.stderr
    # A multi-use code: SCEP refuses it (the code travels in clear inside the stored request).
    multi_row, multi = flows.create_enrollment_code(
        owner=alice, created_by=admin_user, device_name="fleet", uses=5
    )
    fleet = scepclient(tmp_path / "fleet", url, code=multi, fingerprint=fingerprint)
    assert fleet.returncode != 0
    assert "failInfo: badRequest" in fleet.stdout, fleet.stdout + fleet.stderr
    assert Certificate.objects.count() == issued + 1
    multi_row.refresh_from_db()
    assert multi_row.uses == 0

    # Garbage and an oversized message, as plain HTTP POSTs: a plain-text 400 and 413, nothing issued.
    for body, status in ((b"\x30\x82garbage" * 100, 400), (b"\x30" * (70 * 1024), 413)):
        sent = urllib.request.Request(  # noqa: S310 (the live test server)
            f"{url}?operation=PKIOperation",
            data=body,
            headers={"Content-Type": "application/x-pki-message"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(sent, timeout=30)  # noqa: S310 (the live test server)
        assert refused.value.code == status
        assert refused.value.headers.get_content_type() == "text/plain"
    assert Certificate.objects.count() == issued + 1

    # alice's own code: the request waits for an approver. scepclient would re-send it every 30 s; the
    # test stops it once the request is stored, approves it in the flow, and runs it again: the same key,
    # request and transactionID, a poll, which brings the certificate (and no second request).
    kiosk_row, kiosk_code = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="kiosk")
    assert not kiosk_row.pre_approved
    kiosk = tmp_path / "kiosk"
    waiting_client = subprocess.Popen(
        scepclient_command(kiosk, url, code=kiosk_code, fingerprint=fingerprint),
        cwd=kiosk,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        waiting = wait_for_request(kiosk_row.pk)
        time.sleep(1)  # its PENDING reply on the way
    finally:
        waiting_client.terminate()
        output, _ = waiting_client.communicate(timeout=10)
    assert waiting.status == RequestStatus.SUBMITTED
    assert "PENDING" in output.upper(), output
    assert not (kiosk / "device.pem").exists()
    approved = flows.approve(request_id=waiting.pk, by=admin_user)
    assert approved.certificate is not None, approved.reason
    polled = scepclient(kiosk, url, code=kiosk_code, fingerprint=fingerprint)
    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert check_issued(tmp_path, kiosk / "device.pem", alice) == approved.certificate
    assert EnrollmentRequest.objects.filter(enrollment_code=kiosk_row).count() == 1

    # An RSA CA decrypts and signs itself (GetCACert: its certificate alone, no RA): scepclient enrolls at
    # /scep/<its slug>, and the certificate comes from that CA.
    rsa_ca = create_ca(
        name="RSA Device CA", slug="rsa-devices", key_type=CAKeyType.RSA_3072, make_default=False
    )
    rsa_url = f"{live_server.url}/scep/rsa-devices"
    content_type, body = fetch(f"{rsa_url}?operation=GetCACert")
    assert content_type == "application/x-x509-ca-cert"
    assert body == bytes(rsa_ca.certificate_der)
    rsa_folder = tmp_path / "rsa"
    rsa_folder.mkdir()
    (rsa_folder / "chain.pem").write_bytes(rsa_ca.certificate.public_bytes(serialization.Encoding.PEM))
    _row, rsa_code = flows.create_enrollment_code(owner=alice, created_by=admin_user, device_name="printer")
    printed = scepclient(
        rsa_folder / "printer", rsa_url, code=rsa_code, fingerprint=hashlib.sha256(body).hexdigest()
    )
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert check_issued(rsa_folder, rsa_folder / "printer" / "device.pem", alice).ca == rsa_ca


# --- certmonger's scep-submit --------------------------------------------------------------------------


def self_signed(key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    """The requester's transient self-signed certificate (RFC 8894 section 2.3), as certmonger makes it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


class CertmongerDevice:
    """A device with certmonger's keys and messages (RSA-4096, AES-256, SHA-256): it builds pkiMessages
    as the certmonger daemon does and hands them to ``scep-submit``, which sends them as GETs."""

    def __init__(self, folder: Path, url: str, *, code: str) -> None:
        self.folder, self.url, self.code = folder, url, code
        folder.mkdir(exist_ok=True)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        self.signer = self_signed(self.key, "certmonger_device")
        self.transaction_id = hashlib.sha256(
            self.key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
        # As the daemon writes it: the CN a PrintableString although it holds "_", the code as
        # challengePassword (a PrintableString too), an extensionRequest (tests/pki/certmonger.py).
        self.csr = certmonger_csr(self.key, common_name=b"wants_another_name", challenge=code)

    def message(
        self,
        message_type: scep.MessageType,
        content: bytes,
        ra: x509.Certificate,
        *,
        signer: x509.Certificate,
    ) -> Path:
        pem = scep.request_message(
            message_type=message_type,
            content=content,
            transaction_id=self.transaction_id,
            sender_nonce=os.urandom(16),
            signer_certificate_der=der(signer),
            signer_key=self.key,
            recipient_certificate_der=der(ra),
            cipher=scep.ContentCipher.AES256,
            digest_algorithm="sha256",
            now=dt.datetime.now(dt.UTC),
        )
        path = self.folder / f"{message_type.name.lower()}.pem"
        path.write_bytes(pkcs7_pem(pem))
        return path

    def submit(self, mode: str, message: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                need_program(SCEP_SUBMIT),
                *("-u", self.url, "-r", str(self.folder.parent / "ra.pem"), "-N"),
                *(str(self.folder.parent / "ca.pem"), mode, str(message)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def open_envelope(self, printed: str, signer: x509.Certificate, name: str) -> Path:
        """``openssl cms -decrypt`` of the pkcsPKIEnvelope scep-submit printed, with the device's key: the
        issued certificate, saved as ``name``."""
        (self.folder / "envelope.pem").write_text(printed)
        (self.folder / "signer.pem").write_bytes(signer.public_bytes(serialization.Encoding.PEM))
        (self.folder / "device.key").write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        openssl = need_program("openssl")
        decrypted = subprocess.run(
            [
                openssl, "cms", "-decrypt", "-inform", "PEM", "-in", "envelope.pem", "-recip", "signer.pem",
                "-inkey", "device.key", "-outform", "DER", "-out", "certs.der",
            ],
            cwd=self.folder, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert decrypted.returncode == 0, decrypted.stderr
        printed_certs = subprocess.run(
            [openssl, "pkcs7", "-inform", "DER", "-in", "certs.der", "-print_certs", "-out", name],
            cwd=self.folder, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert printed_certs.returncode == 0, printed_certs.stderr
        [certificate] = x509.load_pem_x509_certificates((self.folder / name).read_bytes())
        (self.folder / name).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return self.folder / name


def pkcs7_pem(data: bytes) -> bytes:
    body = base64.encodebytes(data).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PKCS7-----\n{lines}\n-----END PKCS7-----\n".encode()


def test_certmonger_scep_submit_enrolls_waits_for_approval_and_renews(
    live_server: LiveServer, ca: CertificateAuthority, alice: User, admin_user: User, tmp_path: Path
) -> None:
    url = f"{live_server.url}/scep"
    submit = need_program(SCEP_SUBMIT)
    caps = subprocess.run([submit, "-u", url, "-c"], capture_output=True, text=True, timeout=30, check=False)
    assert caps.returncode == 0, caps.stderr
    for capability in ("POSTPKIOperation", "SHA-256", "AES", "Renewal"):
        assert capability in caps.stdout.split(), caps.stdout
    certificates, _fingerprint = ca_ra_certificates(url, tmp_path)
    printed = subprocess.run(
        [submit, "-u", url, "-C"], capture_output=True, text=True, timeout=30, check=False
    )
    assert printed.returncode == 0, printed.stderr
    first_pem = printed.stdout.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    assert x509.load_pem_x509_certificate(first_pem.encode()) == certificates[0]  # the RA first
    ra = certificates[0]

    # A pre-approved code: scep-submit sends the PKCSReq (a GET over 5 KB), verifies the signed reply and
    # prints the envelope, which only the device's key opens: the certificate.
    _row, code = flows.create_enrollment_code(owner=alice, created_by=admin_user, device_name="laptop")
    laptop = CertmongerDevice(tmp_path / "laptop", url, code=code)
    request = laptop.message(scep.MessageType.PKCS_REQ, laptop.csr, ra, signer=laptop.signer)
    assert len(request.read_bytes()) > 5000  # base64 in the GET: more than gunicorn's default request line
    done = laptop.submit("-p", request)
    assert done.returncode == 0, done.stdout + done.stderr
    issued = laptop.open_envelope(done.stdout, laptop.signer, "laptop.pem")
    first = check_issued(tmp_path, issued, alice)
    assert first.device_name == "laptop"

    # alice's own code: PENDING (scep-submit's exit status 1 or 5: "the CA is still thinking"); approved in
    # the flow; the device's CertPoll (GetCertInitial, RFC 8894 section 3.3.3) brings the certificate.
    own_row, own_code = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="desktop")
    desktop = CertmongerDevice(tmp_path / "desktop", url, code=own_code)
    pending = desktop.submit(
        "-p", desktop.message(scep.MessageType.PKCS_REQ, desktop.csr, ra, signer=desktop.signer)
    )
    assert pending.returncode in (1, 5), pending.stdout + pending.stderr
    waiting = EnrollmentRequest.objects.get(enrollment_code=own_row)
    assert waiting.status == RequestStatus.SUBMITTED
    approved = flows.approve(request_id=waiting.pk, by=admin_user)
    assert approved.certificate is not None, approved.reason
    poll = scep.issuer_and_subject(
        issuer_der=ca.certificate.subject.public_bytes(), subject_der=desktop.signer.subject.public_bytes()
    )
    polled = desktop.submit(
        "-g", desktop.message(scep.MessageType.CERT_POLL, poll, ra, signer=desktop.signer)
    )
    assert polled.returncode == 0, polled.stdout + polled.stderr
    issued = desktop.open_envelope(polled.stdout, desktop.signer, "desktop.pem")
    assert check_issued(tmp_path, issued, alice) == approved.certificate

    # Renewal: a RenewalReq signed with the laptop's certificate and its key, a new certificate.
    current = x509.load_pem_x509_certificate((laptop.folder / "laptop.pem").read_bytes())
    renewal = laptop.message(scep.MessageType.RENEWAL_REQ, laptop.csr, ra, signer=current)
    renewed = laptop.submit("-p", renewal)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    second = check_issued(tmp_path, laptop.open_envelope(renewed.stdout, current, "laptop2.pem"), alice)
    assert second.serial != first.serial
    assert EnrollmentRequest.objects.get(certificate=second).renewal_of == first

    # A wrong code: exit status 2 (the CA rejected the request) with the portal's reason; nothing issued.
    count = Certificate.objects.count()
    stranger = CertmongerDevice(tmp_path / "stranger", url, code="not-a-code")
    refused = stranger.submit(
        "-p", stranger.message(scep.MessageType.PKCS_REQ, stranger.csr, ra, signer=stranger.signer)
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert Certificate.objects.count() == count


def test_certmongers_long_gets_reach_the_portal_under_gunicorn(tmp_path: Path) -> None:
    """gunicorn as the portal runs in production (its request line raised to 8190, docs/OPERATIONS.md):
    certmonger's GET of more than 5 KB reaches the portal, which answers with a signed FAILURE (a wrong
    code), not gunicorn's 400 for a request line over its default 4094 bytes."""
    need_program("gunicorn")
    manage = ManagePy(tmp_path)
    (tmp_path / "mail").mkdir()
    (tmp_path / "data" / "static").mkdir(parents=True)
    manage.env.update(
        DJANGO_SETTINGS_MODULE="tests.load_settings",
        ENROLL_LOAD_MAIL_DIR=str(tmp_path / "mail"),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        ENROLL_HTTPS="false",
    )
    manage.ok("migrate", "--noinput")
    manage.ok("init_ca", "--name", "Gunicorn SCEP CA", "--default")
    with PortalInstance(tmp_path / "gunicorn", env=manage.env, workers=1, threads=2) as portal:
        url = f"{portal.url}/scep"
        certificates, _fingerprint = ca_ra_certificates(url, tmp_path)
        device = CertmongerDevice(tmp_path / "device", url, code="not-a-code")
        request = device.message(scep.MessageType.PKCS_REQ, device.csr, certificates[0], signer=device.signer)
        assert len(request.read_bytes()) > 5000
        refused = device.submit("-p", request)
        assert refused.returncode == 2, refused.stdout + refused.stderr  # the CA rejected it: it got there
        log = portal.access_log_path.read_text().splitlines()
        assert log[-1].startswith("200 GET /scep "), log  # the long GET, answered by the portal
        assert 400 not in portal.statuses()
        assert not portal.server_errors()
