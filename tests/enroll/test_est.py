"""EST (RFC 7030) over Django's test client: /.well-known/est/ and its hostile cases.

Every refusal is a 4xx/5xx with a plain-text reason, nothing issued, never a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.client import Client as BaseClient
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from accounts.services import mark_email_verified
from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.pki.est import MAX_BODY_BYTES
from ca.services.authorities import create_ca
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.device_info import instructions
from enroll.models import EnrollmentRequest, RequestKind
from tests.harness.programs import need_program
from tests.helpers import fixture_bytes, make_csr

pytestmark = pytest.mark.django_db

EST = "/.well-known/est/"
Response = Any


@pytest.fixture
def approver(db: None) -> User:
    user = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def code(ca: CertificateAuthority, alice: User, approver: User) -> str:
    """A pre-approved code for alice's router."""
    _row, value = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="router")
    return value


def csr_body(key: ec.EllipticCurvePrivateKey | None = None, pem: bytes | None = None) -> bytes:
    pem = pem or make_csr(key)
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    return base64.encodebytes(der)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def enroll(
    client: BaseClient,
    code: str | None,
    body: bytes | None = None,
    *,
    path: str = "simpleenroll",
    secure: bool = True,
    **extra: Any,
) -> Response:
    """POST a CSR (base64 DER) to an EST operation, with ``code`` as HTTP Basic's password."""
    meta: dict[str, Any] = {"HTTP_AUTHORIZATION": basic("router", code)} if code is not None else {}
    return client.post(
        EST + path,
        data=csr_body() if body is None else body,
        content_type="application/pkcs10",
        secure=secure,
        **meta,
        **extra,
    )


def certificates_of(response: Response) -> list[x509.Certificate]:
    assert response["Content-Transfer-Encoding"] == "base64"
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))


def assert_plain_refusal(response: Response, status: int, words: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/plain")
    assert words in response.content.decode()


# --- HTTPS only ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["cacerts", "csrattrs", "simpleenroll", "simplereenroll"])
def test_plain_http_is_refused_with_a_reason_and_nothing_is_issued(
    client: Client, code: str, operation: str, settings: Settings
) -> None:
    settings.SECURE_SSL_REDIRECT = True  # as in production: EST is exempt, so it refuses instead
    settings.SECURE_REDIRECT_EXEMPT = settings.ENROLL_HTTPS_REDIRECT_EXEMPT
    if operation in ("cacerts", "csrattrs"):
        response = client.get(EST + operation)
    else:
        response = enroll(client, code, path=operation, secure=False)

    assert_plain_refusal(response, 403, "EST needs HTTPS")
    assert not Certificate.objects.exists()
    assert not EnrollmentRequest.objects.exists()


def test_https_said_by_a_trusted_proxy_counts_and_by_anyone_else_does_not(
    client: Client, code: str, settings: Settings
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]

    stranger = enroll(client, code, secure=False, HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="203.0.113.5")
    proxied = enroll(client, code, secure=False, HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="127.0.0.1")

    assert_plain_refusal(stranger, 403, "EST needs HTTPS")
    assert proxied.status_code == 200


# --- cacerts, csrattrs ----------------------------------------------------------------------------


def test_cacerts_is_the_default_cas_chain_as_base64_certs_only_pkcs7(
    client: Client, ca: CertificateAuthority
) -> None:
    response = client.get(EST + "cacerts", secure=True)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkcs7-mime"
    assert [c.public_bytes(serialization.Encoding.DER) for c in certificates_of(response)] == [
        bytes(ca.certificate_der)
    ]


def test_a_named_ca_has_its_own_est_address_and_an_unknown_one_is_404(
    client: Client, ca: CertificateAuthority
) -> None:
    sub = create_ca(name="Devices", slug="devices", parent=ca)

    response = client.get(EST + "devices/cacerts", secure=True)
    unknown = client.get(EST + "nope/cacerts", secure=True)

    chain = {c.public_bytes(serialization.Encoding.DER) for c in certificates_of(response)}
    assert chain == {bytes(sub.certificate_der), bytes(ca.certificate_der)}  # a SET OF: DER sorts it
    assert_plain_refusal(unknown, 404, "There is no CA 'nope'")


def test_csrattrs_asks_for_p256_and_sha256(client: Client, ca: CertificateAuthority) -> None:
    response = client.get(EST + "csrattrs", secure=True)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/csrattrs"
    parsed = core.Sequence.load(base64.b64decode(response.content))
    assert parsed[0].native == "1.2.840.10045.4.3.2"
    key_type = core.Sequence.load(parsed[1].dump())
    assert key_type[0].native == "1.2.840.10045.2.1"  # id-ecPublicKey
    assert core.SetOf.load(key_type[1].dump(), spec=core.ObjectIdentifier)[0].native == "1.2.840.10045.3.1.7"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "cacerts", 405),
        ("get", "simpleenroll", 405),
        ("get", "serverkeygen", 501),
        ("post", "fullcmc", 501),
        ("get", "whatever", 404),
    ],
)
def test_other_operations_and_methods_are_refused_in_plain_words(
    client: Client, ca: CertificateAuthority, method: str, path: str, status: int
) -> None:
    response = getattr(client, method)(EST + path, secure=True)
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/plain")


# --- simpleenroll --------------------------------------------------------------------------------


def test_a_pre_approved_code_gets_the_certificate_with_the_accounts_subject(
    client: Client, code: str, ca: CertificateAuthority
) -> None:
    response = enroll(client, code, csr_body(pem=make_csr(common_name="router-asks-this")))

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    (cert,) = certificates_of(response)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alice"
    cert.verify_directly_issued_by(ca.certificate)
    stored = Certificate.objects.get()
    assert stored.device_name == "router"
    assert EnrollmentRequest.objects.get().kind == RequestKind.EST


def test_raw_der_without_base64_is_accepted_too(client: Client, code: str) -> None:
    der = x509.load_pem_x509_csr(make_csr()).public_bytes(serialization.Encoding.DER)
    assert enroll(client, code, der).status_code == 200


def test_an_owners_code_answers_202_then_the_same_request_later_gets_the_certificate(
    client: Client, ca: CertificateAuthority, alice: User, approver: User
) -> None:
    _row, value = flows.create_enrollment_code(owner=alice, created_by=alice)
    key = ec.generate_private_key(ec.SECP256R1())
    body = csr_body(key)

    waiting = enroll(client, value, body)
    still = enroll(client, value, body)
    request = EnrollmentRequest.objects.get()
    flows.approve(request_id=request.pk, by=approver)
    done = enroll(client, value, body)

    assert waiting.status_code == still.status_code == 202
    assert waiting["Retry-After"] == "60"
    assert "waiting for an approver" in waiting.content.decode()
    assert done.status_code == 200
    (cert,) = certificates_of(done)
    assert cert.serial_number == Certificate.objects.get().serial_int
    assert EnrollmentRequest.objects.count() == 1


def test_no_code_is_401_with_a_basic_challenge(client: Client, ca: CertificateAuthority) -> None:
    response = enroll(client, None)

    assert_plain_refusal(response, 401, "enrollment code")
    assert response["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("wrong", 401, "not valid"),
        ("reused", 403, "used already"),
        ("expired", 403, "expired"),
        ("revoked", 403, "revoked"),
        ("garbage", 400, "not base64"),
        ("empty", 400, "empty"),
        ("not_a_csr", 400, "not a certificate request"),
        ("oversized", 413, "at most 64 KiB"),
        ("weak_key", 400, "1024"),
        ("malformed_auth", 401, "enrollment code"),
    ],
)
def test_hostile_enrollments_are_refused_in_plain_words_and_nothing_is_issued(
    client: Client, code: str, alice: User, approver: User, case: str, status: int, words: str
) -> None:
    body: bytes | None = None
    extra: dict[str, Any] = {}
    if case == "wrong":
        code = "x" + code[1:] if not code.startswith("x") else "y" + code[1:]
    elif case == "reused":
        assert enroll(client, code).status_code == 200
    elif case == "expired":
        row, code = flows.create_enrollment_code(
            owner=alice, created_by=approver, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
        )
    elif case == "revoked":
        row, code = flows.create_enrollment_code(owner=alice, created_by=approver)
        flows.revoke_enrollment_code(code_id=row.pk, actor=approver)
    elif case == "garbage":
        body = b"\x00\x01 this is not base64 \xff"
    elif case == "empty":
        body = b""
    elif case == "not_a_csr":
        body = base64.encodebytes(b"\x30\x03\x02\x01\x05")
    elif case == "oversized":
        body = b"A" * (MAX_BODY_BYTES + 1)
    elif case == "weak_key":
        body = csr_body(pem=fixture_bytes("openssl-rsa1024.csr.pem"))
    elif case == "malformed_auth":
        extra = {"HTTP_AUTHORIZATION": "Basic !!!not-base64"}
    issued = Certificate.objects.count()

    if extra:
        response = client.post(
            EST + "simpleenroll", data=csr_body(), content_type="application/pkcs10", secure=True, **extra
        )
    else:
        response = enroll(client, code, body)

    assert_plain_refusal(response, status, words)
    assert Certificate.objects.count() == issued


def test_too_many_wrong_codes_lock_the_address_out_with_429(
    client: Client, code: str, settings: Settings
) -> None:
    settings.ENROLL_RATE_LIMITS = {
        **settings.ENROLL_RATE_LIMITS,
        "device_code": {"address": "3/h", "code": ""},
    }
    for attempt in range(3):
        assert enroll(client, f"wrong-{attempt}").status_code == 401

    locked = enroll(client, code)

    assert_plain_refusal(locked, 429, "Too many wrong")
    assert int(locked["Retry-After"]) > 0
    assert not Certificate.objects.exists()


def test_the_username_is_not_checked_the_code_decides(client: Client, code: str) -> None:
    response = client.post(
        EST + "simpleenroll",
        data=csr_body(),
        content_type="application/pkcs10",
        secure=True,
        HTTP_AUTHORIZATION=basic("anything", code),
    )
    assert response.status_code == 200


# --- simplereenroll ------------------------------------------------------------------------------


@pytest.fixture
def device_cert(client: Client, code: str) -> Certificate:
    assert enroll(client, code).status_code == 200
    return Certificate.objects.get()


@pytest.fixture
def front_server(settings: Settings) -> Settings:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    return settings


def forwarded(certificate: Certificate | bytes, verify: str = "SUCCESS") -> dict[str, Any]:
    der = certificate if isinstance(certificate, bytes) else bytes(certificate.der)
    pem = "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der).decode() + "-----END CERTIFICATE-----\n"
    return {
        "HTTP_X_SSL_CLIENT_VERIFY": verify,
        "HTTP_X_SSL_CLIENT_CERT": quote(pem, safe=""),
        "REMOTE_ADDR": "127.0.0.1",
    }


def reenroll(client: BaseClient, meta: dict[str, Any], body: bytes | None = None) -> Response:
    return client.post(
        EST + "simplereenroll",
        data=csr_body() if body is None else body,
        content_type="application/pkcs10",
        secure=True,
        **meta,
    )


def test_reenroll_with_the_forwarded_certificate_issues_the_same_subject(
    client: Client, device_cert: Certificate, front_server: Settings
) -> None:
    response = reenroll(client, forwarded(device_cert))

    assert response.status_code == 200, response.content
    (cert,) = certificates_of(response)
    assert cert.subject == x509.load_der_x509_certificate(bytes(device_cert.der)).subject
    assert cert.serial_number != device_cert.serial_int
    assert EnrollmentRequest.objects.filter(renewal_of=device_cert).count() == 1


def test_reenroll_with_the_same_key_is_allowed(
    client: Client, ca: CertificateAuthority, alice: User, approver: User, front_server: Settings
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    _row, value = flows.create_enrollment_code(owner=alice, created_by=approver)
    assert enroll(client, value, csr_body(key)).status_code == 200
    current = Certificate.objects.get()

    response = reenroll(client, forwarded(current), csr_body(key))

    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "case", ["revoked", "expired", "no_certificate", "not_ours", "untrusted_peer", "failed"]
)
def test_hostile_reenrollments_are_refused_and_nothing_is_issued(
    client: Client, device_cert: Certificate, front_server: Settings, case: str, ca: CertificateAuthority
) -> None:
    meta = forwarded(device_cert)
    if case == "revoked":
        revoke_certificate(certificate=device_cert, reason=RevocationReason.KEY_COMPROMISE)
        words, status = "revoked", 403
    elif case == "expired":
        Certificate.objects.filter(pk=device_cert.pk).update(
            not_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        )
        words, status = "expired", 403
    elif case == "no_certificate":
        meta = {"REMOTE_ADDR": "127.0.0.1"}
        words, status = "current certificate", 403
    elif case == "not_ours":
        other = create_ca(name="Elsewhere", slug="elsewhere")
        meta = forwarded(bytes(other.certificate_der))
        words, status = "not issued by this portal", 403
    elif case == "untrusted_peer":
        meta = {**meta, "REMOTE_ADDR": "203.0.113.9"}
        words, status = "current certificate", 403
    else:
        meta = forwarded(device_cert, verify="FAILED:certificate revoked")
        words, status = "current certificate", 403
    count = Certificate.objects.count()

    response = reenroll(client, meta)

    assert_plain_refusal(response, status, words)
    assert Certificate.objects.count() == count


def test_reenroll_refuses_garbage_bodies_too(
    client: Client, device_cert: Certificate, front_server: Settings
) -> None:
    response = reenroll(client, forwarded(device_cert), b"%%% not base64 %%%")

    assert_plain_refusal(response, 400, "not base64")


# --- the commands the pages print, run for real ---------------------------------------------------


@pytest.mark.real_client
def test_the_printed_openssl_and_curl_commands_enroll_for_real(
    live_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    """The commands of *Enroll a device* (``enroll.device_info.instructions``), run by sh with the real
    openssl, base64 and curl against the live test server; a trusted proxy's ``X-Forwarded-Proto`` stands
    for the device server's TLS (tests/realclients/test_est_nginx.py runs EST through a real nginx)."""
    for program in ("openssl", "curl", "base64"):
        need_program(program)
    settings.ENROLL_DEVICE_URL = live_server.url
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    ca = create_ca(name="Live Root CA", slug="live-root", make_default=True)
    alice = User.objects.create_user("alice", "alice@example.com", "alice-password-123")
    mark_email_verified(alice)
    approver = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    approver.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    approver = User.objects.get(pk=approver.pk)
    _row, value = flows.create_enrollment_code(owner=alice, created_by=approver, device_name="router-9")
    commands = instructions(code=value, device_name="router-9", username="alice").commands
    script = "curl() { command curl -H 'X-Forwarded-Proto: https' \"$@\"; }\nset -e\n" + commands

    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "200"
    cert = x509.load_pem_x509_certificate((tmp_path / "router-9.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alice"
    cert.verify_directly_issued_by(ca.certificate)
    assert "PRIVATE KEY" in (tmp_path / "router-9.key").read_text()  # made on the "device", never sent
