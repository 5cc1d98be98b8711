"""Key compromise covers the key: every unexpired certificate on it is revoked, on every CA, at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks

from ca.clock import utcnow
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, Revocation, RevocationReason
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from ca.services.issuance import issue_certificate
from ca.services.ocsp import ocsp_response
from ca.services.revocation import key_siblings, revoke_certificate
from enroll import flows
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def other_ca(ca: CertificateAuthority) -> CertificateAuthority:
    return create_ca(name="Other CA", make_default=False)


@pytest.fixture
def three_on_one_key(
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    alice: User,
    key: ec.EllipticCurvePrivateKey,
    issue_for: IssueFor,
) -> list[Certificate]:
    """Alice's certificate, its renewal that kept the key, and one on another CA: all one key."""
    first = issue_for(alice, make_csr(key))
    renewal = issue_for(alice, make_csr(key))
    elsewhere = issue_certificate(
        request_der=make_csr(key, encoding=serialization.Encoding.DER),
        subject=flows.subject_for(alice),
        owner=alice,
        ca=other_ca,
    )
    return [first, renewal, elsewhere]


def crl_lists(certificate: Certificate) -> bool:
    crl = x509.load_der_x509_crl(bytes(current_crl(ca=certificate.ca).der))
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_int)
    if entry is None:
        return False
    return (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )


def ocsp_status(certificate: Certificate) -> str:
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(
            certificate.x509,
            certificate.ca.certificate,
            hashes.SHA1(),  # noqa: S303 (nginx sends SHA-1 CertIDs)
        )
        .build()
    )
    return ocsp_response(
        ca=certificate.ca, request_der=request.public_bytes(serialization.Encoding.DER)
    ).status


def test_revoking_one_for_key_compromise_revokes_every_certificate_on_the_key_on_every_ca(
    three_on_one_key: list[Certificate],
    alice: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    first = three_on_one_key[0]

    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(certificate=first, reason=RevocationReason.KEY_COMPROMISE, by=alice)

    revocations = Revocation.objects.filter(certificate__in=three_on_one_key)
    assert {r.certificate_id for r in revocations} == {c.pk for c in three_on_one_key}
    assert {r.reason for r in revocations} == {RevocationReason.KEY_COMPROMISE}
    assert len({r.revoked_at for r in revocations}) == 1, "one step, one time"
    for certificate in three_on_one_key:
        assert crl_lists(certificate), f"{certificate.serial} on the CRL of {certificate.ca.slug}"
        assert ocsp_status(certificate) == "revoked"
    audited = AuditEntry.objects.filter(event=AuditEvent.CERTIFICATE_REVOKED).values_list("serial", flat=True)
    assert sorted(audited) == sorted(c.serial for c in three_on_one_key)


def test_each_affected_ca_publishes_one_new_crl(
    three_on_one_key: list[Certificate],
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    before = {c.pk: c.crls.count() for c in (ca, other_ca)}

    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(certificate=three_on_one_key[1], reason=RevocationReason.KEY_COMPROMISE)

    assert {c.pk: c.crls.count() for c in (ca, other_ca)} == {pk: n + 1 for pk, n in before.items()}


@pytest.mark.parametrize("reason", [RevocationReason.SUPERSEDED, RevocationReason.CESSATION_OF_OPERATION])
def test_other_reasons_revoke_only_the_certificate_named(
    three_on_one_key: list[Certificate], reason: RevocationReason
) -> None:
    revoke_certificate(certificate=three_on_one_key[0], reason=reason)

    assert list(Revocation.objects.values_list("certificate_id", flat=True)) == [three_on_one_key[0].pk]


def test_expired_and_revoked_siblings_are_left_as_they_are(
    three_on_one_key: list[Certificate],
) -> None:
    first, renewal, elsewhere = three_on_one_key
    revoke_certificate(certificate=renewal, reason=RevocationReason.SUPERSEDED)
    Certificate.objects.filter(pk=elsewhere.pk).update(not_after=utcnow() - dt.timedelta(seconds=1))

    assert key_siblings(first) == []
    revoke_certificate(certificate=first, reason=RevocationReason.KEY_COMPROMISE)

    assert Revocation.objects.get(certificate=renewal).reason == RevocationReason.SUPERSEDED
    assert not Revocation.objects.filter(certificate=elsewhere).exists()


def test_the_owner_hears_which_certificates_were_revoked(
    three_on_one_key: list[Certificate],
    admin_user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(
            certificate=three_on_one_key[0], reason=RevocationReason.KEY_COMPROMISE, by=admin_user
        )

    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "3 of your certificates were revoked" in message.subject
    for certificate in three_on_one_key:
        assert certificate.serial in message.body
    assert "by admin" in message.body
    assert reverse("portal:request-new") in message.body


def test_the_revoke_page_lists_the_other_certificates_on_the_key_and_revokes_them(
    client: Client,
    alice: User,
    three_on_one_key: list[Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    first, renewal, elsewhere = three_on_one_key
    client.force_login(alice)
    url = reverse("portal:certificate-revoke", args=[first.pk])

    page = client.get(url).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"reason": "key_compromise", "confirm": "on"}, follow=True)

    assert 'id="key-siblings"' in page
    assert renewal.serial in page
    assert elsewhere.serial in page
    assert "2 other certificates of yours" in page
    assert Revocation.objects.count() == 3
    assert renewal.serial in response.content.decode()


def test_the_revoke_page_counts_but_never_shows_other_accounts_certificates_on_the_key(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    key: ec.EllipticCurvePrivateKey,
    issue_for: IssueFor,
) -> None:
    mine = issue_for(alice, make_csr(key))
    # from before "one key, one account": bob holds a certificate on the same key
    bobs = issue_for(bob)
    Certificate.objects.filter(pk=bobs.pk).update(spki_sha256=mine.spki_sha256)
    client.force_login(alice)

    page = client.get(reverse("portal:certificate-revoke", args=[mine.pk])).content.decode()

    assert "1 certificate of other accounts" in page
    assert bobs.serial not in page


def test_the_admin_confirmation_lists_the_certificates_revoked_with_it(
    admin_client: Client,
    three_on_one_key: list[Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    first, renewal, elsewhere = three_on_one_key
    url = reverse("admin:ca-revocation")

    confirm = admin_client.post(
        url,
        {
            "offered": [first.pk, renewal.pk],
            "certificates": [first.pk, renewal.pk],
            "reason": "key_compromise",
        },
    ).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(
            url,
            {"step": "revoke", "certificates": [first.pk, renewal.pk], "reason": "key_compromise"},
            follow=True,
        ).content.decode()

    assert 'id="on-same-key"' in confirm
    assert elsewhere.serial_colons in confirm
    assert "Yes, revoke 3 certificates" in confirm
    assert Revocation.objects.count() == 3
    assert "Revoked 3 certificates" in done
    assert "revoked already" not in done


def test_the_renew_page_recommends_a_new_key(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    client.force_login(alice)

    page = client.get(reverse("portal:certificate-renew", args=[certificate.pk])).content.decode()

    assert "Make a new key (recommended)" in page
    assert page.index("Make a new key") < page.index("You may also keep your key")
