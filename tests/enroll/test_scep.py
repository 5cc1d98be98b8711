"""SCEP (RFC 8894) over Django's test client: /scep and /scep/<ca>, the RA, the device flow, hostile cases.

A message whose signed attributes can be read is answered by a signed CertRep (FAILURE with failInfo and the
reason as failInfoText); what is no pkiMessage gets a plain-text 400 (413 when oversized). Nothing issued on
a refusal, never a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from ca.models import Certificate, CertificateAuthority, RevocationReason, ScepRaCertificate
from ca.pki import scep
from ca.pki.keys import CAKeyType
from ca.services.authorities import create_ca
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus

pytestmark = pytest.mark.django_db

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Device:
    """A SCEP client: its RSA key, the self-signed certificate it signs with, its transactionID."""

    key: rsa.RSAPrivateKey
    signer: x509.Certificate
    transaction_id: str

    @property
    def signer_der(self) -> bytes:
        return self.signer.public_bytes(serialization.Encoding.DER)


def new_device(name: str = "device") -> Device:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return Device(key, signer, base64.b64encode(os.urandom(20)).decode())


def csr(key: Any, challenge: str | None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever-the-device-says")])
    )
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def server_certificate(client: Client, path: str = "/scep") -> bytes:
    """The certificate requests are encrypted to: the RA's (EC CA) or the CA's (RSA CA)."""
    answer = client.get(path, {"operation": "GetCACert"})
    assert answer.status_code == 200, answer.content
    if answer["Content-Type"] == "application/x-x509-ca-cert":
        return bytes(answer.content)
    for certificate in pkcs7.load_der_pkcs7_certificates(answer.content):
        if not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return certificate.public_bytes(serialization.Encoding.DER)
    raise AssertionError("no RA certificate in GetCACert")


def message(
    client: Client,
    device: Device,
    content: bytes,
    *,
    message_type: scep.MessageType = scep.MessageType.PKCS_REQ,
    signer: x509.Certificate | None = None,
    path: str = "/scep",
    cipher: scep.ContentCipher = scep.ContentCipher.AES256,
    digest: str = "sha256",
) -> bytes:
    return scep.request_message(
        message_type=message_type,
        content=content,
        transaction_id=device.transaction_id,
        sender_nonce=os.urandom(16),
        signer_certificate_der=(signer or device.signer).public_bytes(serialization.Encoding.DER),
        signer_key=device.key,
        recipient_certificate_der=server_certificate(client, path),
        cipher=cipher,
        digest_algorithm=digest,
        now=NOW,
    )


def post(client: Client, data: bytes, path: str = "/scep") -> Any:
    return client.post(f"{path}?operation=PKIOperation", data=data, content_type="application/x-pki-message")


def cert_rep(answer: Any, device: Device, signer: x509.Certificate | None = None) -> scep.CertRep:
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"] == "application/x-pki-message"
    me = (signer or device.signer).public_bytes(serialization.Encoding.DER)
    return scep.read_cert_rep(data=answer.content, requester_key=device.key, requester_certificate_der=me)


def enroll(client: Client, device: Device, code: str | None, **options: Any) -> scep.CertRep:
    return cert_rep(post(client, message(client, device, csr(device.key, code), **options)), device)


@pytest.fixture
def approver(db: None) -> User:
    return User.objects.create_superuser("carol", "carol@example.com", "carol-password-123")


@pytest.fixture
def code(ca: CertificateAuthority, alice: User, approver: User) -> str:
    """A pre-approved code for alice's router."""
    _row, value = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="router")
    return value


# --- GetCACaps, GetCACert, the RA ----------------------------------------------------------------------


def test_it_says_what_it_can_do(client: Client, ca: CertificateAuthority) -> None:
    answer = client.get("/scep", {"operation": "GetCACaps"})
    assert answer.status_code == 200
    capabilities = answer.content.decode().split()
    for capability in ("POSTPKIOperation", "SHA-256", "AES", "Renewal", "SCEPStandard"):
        assert capability in capabilities


def test_an_ec_ca_gets_one_rsa_ra_whose_key_is_stored_encrypted(
    client: Client, ca: CertificateAuthority
) -> None:
    answer = client.get("/scep", {"operation": "GetCACert"})
    assert answer["Content-Type"] == "application/x-x509-ca-ra-cert"
    certificates = pkcs7.load_der_pkcs7_certificates(answer.content)
    assert ca.certificate in certificates
    [ra] = ScepRaCertificate.objects.filter(ca=ca)
    assert ra.certificate in certificates
    assert isinstance(ra.certificate.public_key(), rsa.RSAPublicKey)
    ra.certificate.verify_directly_issued_by(ca.certificate)
    key_file = Path(settings.ENROLL_CA_KEY_DIR) / ra.key_file
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    client.get("/scep", {"operation": "GetCACert"})
    assert ScepRaCertificate.objects.filter(ca=ca).count() == 1  # made once, then reused


def test_an_rsa_ca_decrypts_itself_and_answers_its_certificate_alone(client: Client, db: None) -> None:
    rsa_ca = create_ca(name="RSA CA", slug="rsa-ca", key_type=CAKeyType.RSA_3072, make_default=False)
    answer = client.get("/scep/rsa-ca", {"operation": "GetCACert"})
    assert answer["Content-Type"] == "application/x-x509-ca-cert"
    assert bytes(answer.content) == bytes(rsa_ca.certificate_der)
    assert not ScepRaCertificate.objects.exists()


def test_the_command_shows_and_rotates_the_ra(ca: CertificateAuthority) -> None:
    out = io.StringIO()
    call_command("scep_ra", stdout=out)
    first = ScepRaCertificate.objects.get(ca=ca)
    assert out.getvalue().splitlines()[-1] == first.fingerprint_sha256
    out = io.StringIO()
    call_command("scep_ra", "--new", stdout=out)
    newest = ScepRaCertificate.objects.filter(ca=ca).order_by("-created_at").first()
    assert newest is not None
    assert newest != first
    assert out.getvalue().splitlines()[-1] == newest.fingerprint_sha256


# --- enrollment --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cipher", "digest", "reply_cipher"),
    [
        (scep.ContentCipher.DES, "sha1", scep.ContentCipher.DES3),  # micromdm's scepclient
        (scep.ContentCipher.AES256, "sha256", scep.ContentCipher.AES256),  # certmonger
    ],
)
def test_a_pre_approved_code_gets_the_certificate_and_a_repeat_is_a_poll(
    client: Client,
    code: str,
    alice: User,
    cipher: scep.ContentCipher,
    digest: str,
    reply_cipher: scep.ContentCipher,
) -> None:
    device = new_device()
    reply = enroll(client, device, code, cipher=cipher, digest=digest)
    assert reply.status == scep.PkiStatus.SUCCESS, reply.fail_text
    assert reply.transaction_id == device.transaction_id
    assert reply.content_cipher == reply_cipher
    [issued] = reply.certificates
    certificate = Certificate.objects.get(der=issued)
    assert certificate.owner == alice
    assert certificate.device_name == "router"
    assert certificate.x509.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    request = EnrollmentRequest.objects.get(certificate=certificate)
    assert request.kind == RequestKind.SCEP
    assert request.transaction_id == device.transaction_id
    # scepclient re-sends the identical PKCSReq: the same certificate, no second request or issuance.
    again = enroll(client, device, code, cipher=cipher, digest=digest)
    assert again.status == scep.PkiStatus.SUCCESS
    assert again.certificates == (issued,)
    assert Certificate.objects.count() == 1
    assert EnrollmentRequest.objects.count() == 1


def test_a_get_with_url_safe_base64_works_as_scepclient_sends_it(client: Client, code: str) -> None:
    device = new_device()
    data = message(client, device, csr(device.key, code))
    answer = client.get(
        "/scep", {"operation": "PKIOperation", "message": base64.urlsafe_b64encode(data).decode()}
    )
    assert cert_rep(answer, device).status == scep.PkiStatus.SUCCESS


def test_the_owners_code_waits_for_approval_and_certpoll_brings_the_certificate(
    client: Client, ca: CertificateAuthority, alice: User, approver: User
) -> None:
    _row, own = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="kiosk")
    device = new_device()
    reply = enroll(client, device, own)
    assert reply.status == scep.PkiStatus.PENDING
    assert reply.content == b""
    poll_content = scep.issuer_and_subject(
        issuer_der=ca.certificate.subject.public_bytes(), subject_der=device.signer.subject.public_bytes()
    )
    poll = post(client, message(client, device, poll_content, message_type=scep.MessageType.CERT_POLL))
    assert cert_rep(poll, device).status == scep.PkiStatus.PENDING
    waiting = EnrollmentRequest.objects.get(transaction_id=device.transaction_id)
    assert waiting.status == RequestStatus.SUBMITTED
    approved = flows.approve(request_id=waiting.pk, by=approver)
    assert approved.certificate is not None
    poll = post(client, message(client, device, poll_content, message_type=scep.MessageType.CERT_POLL))
    answer = cert_rep(poll, device)
    assert answer.status == scep.PkiStatus.SUCCESS
    assert answer.certificates == (bytes(approved.certificate.der),)


def test_a_rejected_request_is_a_failure_on_the_next_poll(
    client: Client, ca: CertificateAuthority, alice: User, approver: User
) -> None:
    _row, own = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="kiosk")
    device = new_device()
    assert enroll(client, device, own).status == scep.PkiStatus.PENDING
    waiting = EnrollmentRequest.objects.get(transaction_id=device.transaction_id)
    flows.reject(request_id=waiting.pk, by=approver, reason="not our kiosk")
    reply = enroll(client, device, own)
    assert reply.status == scep.PkiStatus.FAILURE
    assert "not our kiosk" in reply.fail_text


def test_renewal_req_signed_with_the_current_certificate_renews_it(
    client: Client, code: str, alice: User
) -> None:
    device = new_device()
    [issued] = enroll(client, device, code).certificates
    current = x509.load_der_x509_certificate(issued)
    renewal = new_device()
    renewal.key = device.key  # signed with the current certificate's key; a new request (same key)
    reply = cert_rep(
        post(
            client,
            message(
                client,
                renewal,
                csr(device.key, None),
                message_type=scep.MessageType.RENEWAL_REQ,
                signer=current,
            ),
        ),
        renewal,
        signer=current,
    )
    assert reply.status == scep.PkiStatus.SUCCESS, reply.fail_text
    [renewed] = reply.certificates
    row = Certificate.objects.get(der=renewed)
    assert row.serial != Certificate.objects.get(der=issued).serial
    assert EnrollmentRequest.objects.get(certificate=row).renewal_of == Certificate.objects.get(der=issued)
    assert row.subject == Certificate.objects.get(der=issued).subject


def test_renewal_with_a_revoked_certificate_is_refused(client: Client, code: str) -> None:
    device = new_device()
    [issued] = enroll(client, device, code).certificates
    row = Certificate.objects.get(der=issued)
    revoke_certificate(certificate=row, reason=RevocationReason.KEY_COMPROMISE)
    current = x509.load_der_x509_certificate(issued)
    renewal = new_device()
    renewal.key = device.key
    data = message(
        client, renewal, csr(device.key, None), message_type=scep.MessageType.RENEWAL_REQ, signer=current
    )
    reply = cert_rep(post(client, data), renewal, signer=current)
    assert reply.status == scep.PkiStatus.FAILURE
    assert "revoked" in reply.fail_text
    assert Certificate.objects.count() == 1


# --- hostile cases -------------------------------------------------------------------------------------


def _used_code(client: Client, alice: User, approver: User) -> str:
    _row, value = flows.create_enrollment_code(owner=alice, created_by=approver)
    assert enroll(client, new_device(), value).status == scep.PkiStatus.SUCCESS
    return value


def _expired_code(client: Client, alice: User, approver: User) -> str:
    row, value = flows.create_enrollment_code(owner=alice, created_by=approver)
    row.expires_at = NOW - dt.timedelta(minutes=1)
    row.save()
    return value


def _revoked_code(client: Client, alice: User, approver: User) -> str:
    row, value = flows.create_enrollment_code(owner=alice, created_by=approver)
    flows.revoke_enrollment_code(code_id=row.pk, actor=approver)
    return value


def _multi_use_code(client: Client, alice: User, approver: User) -> str:
    return flows.create_enrollment_code(owner=alice, created_by=approver, uses=5)[1]


@pytest.mark.parametrize(
    ("make_code", "words"),
    [
        (lambda c, a, b: "wrong-code", "not valid"),
        (_used_code, "used already"),
        (_expired_code, "expired"),
        (_revoked_code, "revoked"),
        (_multi_use_code, "single-use"),
        (lambda c, a, b: None, "challengePassword"),
    ],
    ids=["wrong", "reused", "expired", "revoked", "multi-use", "none"],
)
def test_a_bad_code_is_a_failure_with_the_reason_and_nothing_is_issued(
    client: Client, ca: CertificateAuthority, alice: User, approver: User, make_code: Any, words: str
) -> None:
    value = make_code(client, alice, approver)
    issued = Certificate.objects.count()
    device = new_device()
    reply = enroll(client, device, value)
    assert reply.status == scep.PkiStatus.FAILURE
    assert reply.fail_info == scep.FailInfo.BAD_REQUEST
    assert words in reply.fail_text
    assert reply.transaction_id == device.transaction_id
    assert Certificate.objects.count() == issued
    assert not EnrollmentRequest.objects.filter(transaction_id=device.transaction_id).exists()


def test_a_key_the_policy_refuses_is_a_failure(client: Client, code: str) -> None:
    device = new_device()
    weak = csr(ec.generate_private_key(ec.SECP256K1()), code)  # the device signs with RSA, asks for secp256k1
    reply = cert_rep(post(client, message(client, device, weak)), device)
    assert reply.status == scep.PkiStatus.FAILURE
    assert reply.fail_text
    assert not Certificate.objects.exists()


def test_a_message_for_another_server_is_a_bad_message_check(client: Client, code: str) -> None:
    device = new_device()
    other = new_device("another server")
    data = scep.request_message(
        message_type=scep.MessageType.PKCS_REQ,
        content=csr(device.key, code),
        transaction_id=device.transaction_id,
        sender_nonce=os.urandom(16),
        signer_certificate_der=device.signer_der,
        signer_key=device.key,
        recipient_certificate_der=other.signer_der,
        cipher=scep.ContentCipher.AES256,
        digest_algorithm="sha256",
        now=NOW,
    )
    reply = cert_rep(post(client, data), device)
    assert reply.status == scep.PkiStatus.FAILURE
    assert reply.fail_info == scep.FailInfo.BAD_MESSAGE_CHECK
    assert not Certificate.objects.exists()


def test_a_poll_for_an_unknown_transaction_is_bad_cert_id(client: Client, ca: CertificateAuthority) -> None:
    device = new_device()
    content = scep.issuer_and_subject(
        issuer_der=ca.certificate.subject.public_bytes(), subject_der=device.signer.subject.public_bytes()
    )
    reply = cert_rep(
        post(client, message(client, device, content, message_type=scep.MessageType.CERT_POLL)), device
    )
    assert reply.status == scep.PkiStatus.FAILURE
    assert reply.fail_info == scep.FailInfo.BAD_CERT_ID


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status", "words"),
    [
        ("post", "/scep?operation=PKIOperation", {}, b"garbage" * 100, 400, "not valid DER"),
        ("post", "/scep?operation=PKIOperation", {}, b"", 400, "no message"),
        ("post", "/scep?operation=PKIOperation", {}, b"0" * (scep.MAX_MESSAGE_BYTES + 1), 413, "larger than"),
        ("get", "/scep", {"operation": "PKIOperation", "message": "A" * 200_000}, b"", 413, "larger than"),
        ("get", "/scep", {"operation": "PKIOperation", "message": "%%%not base64"}, b"", 400, "base64"),
        ("get", "/scep", {"operation": "PKIOperation"}, b"", 400, "no message"),
        ("get", "/scep", {"operation": "GetNextCACert"}, b"", 400, "no SCEP operation"),
        ("get", "/scep", {}, b"", 400, "no SCEP operation"),
        ("get", "/scep/no-such-ca", {"operation": "GetCACaps"}, b"", 404, "no CA"),
        ("put", "/scep", {}, b"", 405, "GET and POST"),
    ],
)
def test_what_is_no_scep_message_gets_a_plain_text_error(
    client: Client,
    ca: CertificateAuthority,
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes,
    status: int,
    words: str,
) -> None:
    if method == "post":
        answer = client.post(path, data=body, content_type="application/x-pki-message")
    elif method == "get":
        answer = client.get(path, params)
    else:
        answer = client.put(path, data=body)
    assert answer.status_code == status
    assert answer["Content-Type"].startswith("text/plain")
    assert words in answer.content.decode()
    assert not Certificate.objects.exists()


def test_without_a_ca_scep_says_so(client: Client, db: None) -> None:
    answer = client.get("/scep", {"operation": "GetCACert"})
    assert answer.status_code == 503
    assert "no CA" in answer.content.decode()


def test_a_client_holding_the_previous_ra_still_enrolls_after_a_rotation(
    client: Client, code: str, ca: CertificateAuthority
) -> None:
    device = new_device()
    data = message(client, device, csr(device.key, code))  # encrypted to the first RA
    call_command("scep_ra", "--new", stdout=io.StringIO())
    assert ScepRaCertificate.objects.filter(ca=ca).count() == 2
    reply = cert_rep(post(client, data), device)
    assert reply.status == scep.PkiStatus.SUCCESS, reply.fail_text


def test_scep_stays_plain_http_when_the_portal_redirects_to_https(
    client: Client, ca: CertificateAuthority, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = settings.ENROLL_HTTPS_REDIRECT_EXEMPT
    assert client.get("/scep", {"operation": "GetCACaps"}).status_code == 200
    assert client.get("/scep/test-root", {"operation": "GetCACaps"}).status_code == 200
    assert client.get("/accounts/login/").status_code == 301  # the portal itself is redirected


def test_a_certpoll_signed_with_another_key_learns_nothing(
    client: Client, ca: CertificateAuthority, alice: User
) -> None:
    _row, own = flows.create_enrollment_code(owner=alice, created_by=alice, device_name="kiosk")
    device = new_device()
    assert enroll(client, device, own).status == scep.PkiStatus.PENDING
    snoop = new_device("snoop")
    snoop.transaction_id = device.transaction_id  # scepclient's transactionID is a hash of the public key
    content = scep.issuer_and_subject(
        issuer_der=ca.certificate.subject.public_bytes(), subject_der=snoop.signer.subject.public_bytes()
    )
    reply = cert_rep(
        post(client, message(client, snoop, content, message_type=scep.MessageType.CERT_POLL)), snoop
    )
    assert reply.status == scep.PkiStatus.FAILURE
    assert reply.fail_info == scep.FailInfo.BAD_CERT_ID
