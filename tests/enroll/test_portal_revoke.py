"""Self-service revocation: confirmation page, reasons, the CRL republished at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks

from ca.clock import utcnow
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, Revocation, RevocationReason
from ca.services.keys import clear_key_cache, key_path
from ca.services.revocation import revoke_certificate

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]


def revoke_url(certificate: Certificate) -> str:
    return reverse("portal:certificate-revoke", args=[certificate.pk])


def crl_from_endpoint(client: Client, ca: CertificateAuthority) -> x509.CertificateRevocationList:
    response = client.get(reverse("ca:crl-der", kwargs={"slug": ca.slug}))
    assert response.status_code == 200
    return x509.load_der_x509_crl(response.content)


def test_the_confirmation_page_offers_the_three_reasons(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    client.force_login(alice)

    response = client.get(revoke_url(certificate))

    body = response.content.decode()
    assert response.status_code == 200
    assert certificate.serial in body
    for value in ("key_compromise", "superseded", "cessation_of_operation"):
        assert f'value="{value}"' in body
    assert 'value="ca_compromise"' not in body
    assert "cannot be undone" in body
    assert not Revocation.objects.exists(), "a GET changes nothing"


@pytest.mark.parametrize("reason", ["key_compromise", "superseded", "cessation_of_operation"])
def test_revoking_puts_the_serial_on_the_published_crl_at_once(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    issue_for: IssueFor,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    reason: str,
) -> None:
    certificate = issue_for(alice)
    client.force_login(alice)
    before = crl_from_endpoint(client, ca)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(revoke_url(certificate), {"reason": reason, "confirm": "on"})

    assert callbacks, "the CRL is republished on commit"
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:certificate-detail", args=[certificate.pk])
    revocation = Revocation.objects.get(certificate=certificate)
    assert revocation.reason == reason
    assert revocation.revoked_by == alice
    crl = crl_from_endpoint(client, ca)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > (
        before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )
    entry = crl.get_revoked_certificate_by_serial_number(certificate.x509.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags[reason]
    page = client.get(response["Location"]).content.decode()
    assert "is revoked" in page
    assert ">Revoked<" in page
    assert AuditEntry.objects.filter(
        event=AuditEvent.CERTIFICATE_REVOKED, actor=alice, serial=certificate.serial
    ).exists()


def test_key_compromise_takes_an_optional_invalidity_date(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    client.force_login(alice)
    day = (utcnow() - dt.timedelta(days=3)).date()

    client.post(
        revoke_url(certificate),
        {"reason": "key_compromise", "invalidity_date": day.isoformat(), "confirm": "on"},
    )

    revocation = Revocation.objects.get(certificate=certificate)
    assert revocation.reason == RevocationReason.KEY_COMPROMISE
    assert revocation.invalidity_date == dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"reason": "superseded"}, "This field is required"),
        ({"confirm": "on"}, "This field is required"),
        ({"reason": "ca_compromise", "confirm": "on"}, "Select a valid choice"),
        ({"reason": "unspecified", "confirm": "on"}, "Select a valid choice"),
        (
            {"reason": "superseded", "invalidity_date": "2020-01-01", "confirm": "on"},
            "only goes with the reason key compromise",
        ),
        (
            {"reason": "key_compromise", "invalidity_date": "2999-01-01", "confirm": "on"},
            "cannot be in the future",
        ),
        ({"reason": "key_compromise", "invalidity_date": "yesterday", "confirm": "on"}, "Enter a valid date"),
        ({"reason": "key_compromise", "invalidity_date": "0001-01-01", "confirm": "on"}, None),
    ],
)
def test_bad_revocation_input_is_shown_inline_and_revokes_nothing(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    issue_for: IssueFor,
    data: dict[str, str],
    expected: str | None,
) -> None:
    certificate = issue_for(alice)
    client.force_login(alice)

    response = client.post(revoke_url(certificate), data)

    if expected is None:  # an absurd but past date is accepted, not a 500
        assert response.status_code == 302
        return
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not Revocation.objects.exists()


def test_a_revoked_certificate_cannot_be_revoked_again(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    client.force_login(alice)

    for response in (
        client.get(revoke_url(certificate)),
        client.post(revoke_url(certificate), {"reason": "key_compromise", "confirm": "on"}),
    ):
        assert response.status_code == 302
    page = client.get(reverse("portal:certificate-detail", args=[certificate.pk])).content.decode()

    assert "revoked already" in page
    assert Revocation.objects.get().reason == RevocationReason.SUPERSEDED
    assert revoke_url(certificate) not in page


def test_an_expired_certificate_needs_no_revocation(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    Certificate.objects.filter(pk=certificate.pk).update(not_after=utcnow() - dt.timedelta(days=1))
    client.force_login(alice)

    response = client.post(revoke_url(certificate), {"reason": "superseded", "confirm": "on"})

    assert response.status_code == 302
    assert not Revocation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_crl_that_cannot_be_signed_still_revokes_and_says_so(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    key_path(ca).unlink()
    clear_key_cache()
    client.force_login(alice)

    response = client.post(
        revoke_url(certificate), {"reason": "key_compromise", "confirm": "on"}, follow=True
    )

    assert response.status_code == 200
    assert "could not be published yet" in response.content.decode()
    assert Revocation.objects.filter(certificate=certificate).exists()
