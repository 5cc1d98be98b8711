"""The enrollment flow: submit, approve (issue) and reject, and how every step ends."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from accounts.services import mark_email_verified
from ca.models import Certificate, CertificateAuthority
from ca.pki.errors import Refusal, RequestRefused
from ca.services import issuance
from ca.services.keys import clear_key_cache, key_path
from enroll import flows
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus
from tests.conftest import fixture_bytes, make_csr

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC)

PROFILE_EXTENSIONS = {
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectKeyIdentifier,
    x509.AuthorityKeyIdentifier,
    x509.CRLDistributionPoints,
    x509.AuthorityInformationAccess,
}


def csr_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def submit_and_approve(owner: User, csr: bytes | None = None, **approve_kwargs: object) -> EnrollmentRequest:
    request = flows.submit_csr(owner=owner, data=csr or make_csr())
    return flows.approve(request_id=request.pk, **approve_kwargs)  # type: ignore[arg-type]


# --- submit ---------------------------------------------------------------------------------------


def test_submit_stores_the_der_its_sha256_the_key_and_the_requested_subject(alice: User) -> None:
    pem = make_csr(common_name="Alice asks for this")

    request = flows.submit_csr(owner=alice, data=pem, now=NOW)

    stored = EnrollmentRequest.objects.get(pk=request.pk)
    der = csr_der(pem)
    assert bytes(stored.request_der) == der
    assert stored.request_sha256 == hashlib.sha256(der).hexdigest()
    assert stored.key_description == "ECDSA P-256"
    assert stored.requested_subject == "CN=Alice asks for this"
    assert stored.status == RequestStatus.SUBMITTED
    assert stored.kind == RequestKind.CSR
    assert stored.owner == alice
    assert stored.created_at == NOW
    assert stored.certificate is None
    assert stored.decided_at is None
    assert stored.decided_by is None


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("openssl-rsa2048.csr.der", "RSA 2048"),
        ("openssl-rsa2048-crlf.csr.pem", "RSA 2048"),
        ("openssl-ec-p384.csr.pem", "ECDSA P-384"),
        ("keytool-ec-p256.csr.pem", "ECDSA P-256"),
    ],
)
def test_submit_stores_the_canonical_der_whatever_the_encoding(
    alice: User, name: str, description: str
) -> None:
    data = fixture_bytes(name)
    der = data if name.endswith(".der") else csr_der(data.replace(b"NEW CERTIFICATE", b"CERTIFICATE"))

    request = flows.submit_csr(owner=alice, data=data)

    request.refresh_from_db()
    assert bytes(request.request_der) == der
    assert request.request_sha256 == hashlib.sha256(der).hexdigest()
    assert request.key_description == description


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("openssl-rsa1024.csr.pem", Refusal.KEY_SIZE),
        ("openssl-ec-secp256k1.csr.pem", Refusal.EC_CURVE),
        ("openssl-rsa2048-sha1.csr.pem", Refusal.SIGNATURE_ALGORITHM),
        ("tampered-signature.csr.pem", Refusal.BAD_SIGNATURE),
        ("selfsigned-cert.pem", Refusal.CERTIFICATE),
        ("openssl-ec-p256.key.pem", Refusal.PRIVATE_KEY),
    ],
)
def test_a_refused_csr_stores_nothing(alice: User, name: str, code: Refusal) -> None:
    with pytest.raises(RequestRefused) as refused:
        flows.submit_csr(owner=alice, data=fixture_bytes(name))

    assert refused.value.code == code
    assert refused.value.message
    assert not EnrollmentRequest.objects.exists()


# --- approve -------------------------------------------------------------------------------------


def test_approve_issues_a_certificate_and_records_the_decision(
    ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    approved = flows.approve(request_id=request.pk, by=admin_user, now=NOW - dt.timedelta(days=1))

    stored = EnrollmentRequest.objects.get(pk=request.pk)
    assert approved.status == stored.status == RequestStatus.ISSUED
    assert stored.certificate is not None
    assert stored.certificate == approved.certificate
    assert stored.decided_at == NOW - dt.timedelta(days=1)
    assert stored.decided_by == admin_user
    assert stored.reason == ""
    certificate = stored.certificate
    assert certificate.ca == ca
    assert certificate.owner == alice
    assert certificate.request_sha256 == request.request_sha256
    assert certificate.spki_sha256 == request.spki_sha256
    assert certificate.profile == "client"


def test_the_certificate_is_for_the_requested_key_and_signed_by_the_ca(
    ca: CertificateAuthority, alice: User
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    request = submit_and_approve(alice, make_csr(key))

    assert request.certificate is not None
    cert = request.certificate.x509
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.certificate)
    assert (
        hashlib.sha256(bytes(request.certificate.der)).hexdigest() == request.certificate.fingerprint_sha256
    )


def test_the_subject_comes_from_the_account_with_the_verified_email(
    ca: CertificateAuthority, alice: User
) -> None:
    request = submit_and_approve(alice, make_csr(common_name="root"))

    assert request.certificate is not None
    cert = request.certificate.x509
    assert cert.subject == x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Enroll Portal"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
        ]
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.RFC822Name("alice@example.com")]
    assert request.certificate.subject == "CN=alice,O=Enroll Portal"


def test_an_unverified_email_gives_no_subject_alternative_name(ca: CertificateAuthority) -> None:
    carol = User.objects.create_user("carol", "carol@example.com", "carol-password-123")

    request = submit_and_approve(carol)

    assert request.certificate is not None
    extensions = request.certificate.x509.extensions
    with pytest.raises(x509.ExtensionNotFound):
        extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert {type(e.value) for e in extensions} == PROFILE_EXTENSIONS


def test_an_email_changed_after_verification_gives_no_subject_alternative_name(
    ca: CertificateAuthority,
) -> None:
    dave = User.objects.create_user("dave", "dave@example.com", "dave-password-123")
    mark_email_verified(dave)
    dave.email = "dave@elsewhere.example"
    dave.save()

    request = submit_and_approve(dave)

    assert request.certificate is not None
    with pytest.raises(x509.ExtensionNotFound):
        request.certificate.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_the_organization_comes_from_settings(
    ca: CertificateAuthority, alice: User, settings: Settings
) -> None:
    settings.ENROLL_ORGANIZATION = "Example Lab"

    request = submit_and_approve(alice)

    assert request.certificate is not None
    assert request.certificate.subject == "CN=alice,O=Example Lab"


def test_nothing_of_a_hostile_csr_reaches_the_certificate(ca: CertificateAuthority, alice: User) -> None:
    evil = fixture_bytes("openssl-ec-p256-evil-ext.csr.pem")

    request = submit_and_approve(alice, evil)

    assert request.status == RequestStatus.ISSUED, request.reason
    assert request.requested_subject == "O=Evil Corp,CN=admin"
    assert request.certificate is not None
    cert = request.certificate.x509
    extensions = cert.extensions
    assert {type(e.value) for e in extensions} == PROFILE_EXTENSIONS | {x509.SubjectAlternativeName}
    assert len(extensions) == len(PROFILE_EXTENSIONS) + 1
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.RFC822Name("alice@example.com")]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert "Evil" not in cert.subject.rfc4514_string()
    assert cert.public_key() == x509.load_pem_x509_csr(evil).public_key()


def test_approving_twice_is_refused_and_leaves_one_certificate(ca: CertificateAuthority, alice: User) -> None:
    request = submit_and_approve(alice)

    with pytest.raises(flows.FlowError, match="issued"):
        flows.approve(request_id=request.pk)

    assert Certificate.objects.count() == 1
    request.refresh_from_db()
    assert request.status == RequestStatus.ISSUED


def test_approving_a_rejected_request_is_refused(ca: CertificateAuthority, alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=request.pk, reason="Unknown key")

    with pytest.raises(flows.FlowError, match="rejected"):
        flows.approve(request_id=request.pk)

    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert request.certificate is None
    assert not Certificate.objects.exists()


def test_approving_an_unknown_request_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(flows.FlowError, match="no request #4711"):
        flows.approve(request_id=4711)


def test_nobody_approves_their_own_request(ca: CertificateAuthority, admin_user: User) -> None:
    request = flows.submit_csr(owner=admin_user, data=make_csr())

    with pytest.raises(flows.FlowError, match="own request"):
        flows.approve(request_id=request.pk, by=admin_user)

    request.refresh_from_db()
    assert request.status == RequestStatus.SUBMITTED
    assert request.decided_by is None
    assert request.certificate is None
    assert not Certificate.objects.exists()


# --- reject --------------------------------------------------------------------------------------


def test_reject_records_the_reason_and_the_decision(alice: User, admin_user: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    flows.reject(request_id=request.pk, reason="  Use your work account.  ", by=admin_user, now=NOW)

    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert request.reason == "Use your work account."
    assert request.decided_by == admin_user
    assert request.decided_at == NOW
    assert request.certificate is None


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_reject_needs_a_reason(alice: User, reason: str) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    with pytest.raises(flows.FlowError, match="reason"):
        flows.reject(request_id=request.pk, reason=reason)

    request.refresh_from_db()
    assert request.status == RequestStatus.SUBMITTED
    assert request.decided_at is None


def test_an_issued_request_cannot_be_rejected(ca: CertificateAuthority, alice: User) -> None:
    request = submit_and_approve(alice)

    with pytest.raises(flows.FlowError, match="issued"):
        flows.reject(request_id=request.pk, reason="Changed my mind")

    request.refresh_from_db()
    assert request.status == RequestStatus.ISSUED
    assert request.reason == ""


# --- failures after approval -----------------------------------------------------------------------


def _delete_key_file(ca: CertificateAuthority, settings: Settings) -> None:
    key_path(ca).unlink()


def _wrong_passphrase(ca: CertificateAuthority, settings: Settings) -> None:
    clear_key_cache()
    settings.ENROLL_CA_PASSPHRASE = "not-the-passphrase-of-this-key"


def _no_default_ca(ca: CertificateAuthority, settings: Settings) -> None:
    CertificateAuthority.objects.update(is_default=False)


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (_delete_key_file, "cannot be read"),
        (_wrong_passphrase, "passphrase is wrong"),
        (_no_default_ca, "No CA issues certificates"),
    ],
    ids=["key-file-deleted", "wrong-passphrase", "no-default-ca"],
)
def test_a_failure_after_approval_ends_failed_with_the_reason_and_no_certificate(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    settings: Settings,
    break_it: Callable[[CertificateAuthority, Settings], None],
    expected: str,
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    break_it(ca, settings)

    result = flows.approve(request_id=request.pk, by=admin_user, now=NOW)

    stored = EnrollmentRequest.objects.get(pk=request.pk)
    assert result.status == stored.status == RequestStatus.FAILED
    assert stored.reason.startswith("Issuing failed: ")
    assert expected in stored.reason
    assert stored.certificate is None
    assert stored.decided_by == admin_user
    assert stored.decided_at == NOW
    assert not Certificate.objects.exists(), "the reserved serial must be rolled back"


def test_a_failed_request_cannot_be_approved_again(ca: CertificateAuthority, alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    key_path(ca).unlink()
    flows.approve(request_id=request.pk)

    with pytest.raises(flows.FlowError, match="failed"):
        flows.approve(request_id=request.pk)


def test_an_unexpected_error_while_signing_still_ends_failed(
    ca: CertificateAuthority, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(**kwargs: object) -> Certificate:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(issuance, "issue", explode)
    request = flows.submit_csr(owner=alice, data=make_csr())

    result = flows.approve(request_id=request.pk)

    assert result.status == RequestStatus.FAILED
    assert "ZeroDivisionError" in result.reason
    assert result.certificate is None


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        (csr_der(fixture_bytes("openssl-rsa1024.csr.pem")), "1024"),
        (csr_der(fixture_bytes("openssl-ec-secp256k1.csr.pem")), "curve"),
        (csr_der(fixture_bytes("tampered-signature.csr.pem")), "signature"),
        (b"\x30\x03\x02\x01\x00", "not a valid PKCS#10"),
    ],
    ids=["rsa1024", "secp256k1", "bad-signature", "garbage"],
)
def test_the_ca_rechecks_a_stored_request_altered_in_the_database(
    ca: CertificateAuthority, alice: User, replacement: bytes, expected: str
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    EnrollmentRequest.objects.filter(pk=request.pk).update(request_der=replacement)

    result = flows.approve(request_id=request.pk)

    assert result.status == RequestStatus.FAILED
    assert expected in result.reason
    assert result.certificate is None
    assert not Certificate.objects.exists()
