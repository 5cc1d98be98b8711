"""The signer re-checks what it is asked to sign and refuses, with the reason, whatever the ``ca`` layer
would not issue: it signs a certificate only for a reserved, authorised serial of its CA, within the
profile's validity, for a key that is allowed; CRLs and OCSP answers only as the database has them."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User

from ca.models import (
    AuditEntry,
    AuditEvent,
    BlockedKey,
    BlockedKeySource,
    CertificateAuthority,
    IssuanceAuthorisation,
)
from ca.pki import keypolicy
from ca.pki.errors import CAKeyError
from ca.services import authorities
from ca.signer.server import Signer
from tests.signer.conftest import Draft, draft


def _refusal(work: Draft, signer: Signer) -> str:
    with pytest.raises(CAKeyError) as refused:
        work.sign(signer.path)
    return str(refused.value)


def test_it_signs_an_authorised_certificate_and_notes_it(
    signer: Signer, ca: CertificateAuthority, alice: User, admin_user: User
) -> None:
    work = draft(ca, alice, approver=admin_user)
    certificate = work.sign(signer.path)
    assert certificate.serial_number == int(work.reservation.serial, 16)
    signer.writer.stop()  # flush what it has to write
    grant = IssuanceAuthorisation.objects.get(ca=ca, serial=work.reservation.serial)
    assert grant.used_at is not None
    entry = AuditEntry.objects.get(event=AuditEvent.SIGNER_SIGNED, serial=work.reservation.serial)
    assert "approved by admin" in entry.detail


def test_it_refuses_a_certificate_nobody_authorised(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None, authorise=False)
    assert "no issuance authorisation" in _refusal(work, signer)
    signer.writer.stop()
    assert AuditEntry.objects.filter(event=AuditEvent.SIGNER_REFUSED, ca_slug=ca.slug).exists()


def test_it_refuses_to_sign_the_same_serial_twice(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None)
    work.sign(signer.path)
    assert "signed already" in _refusal(work, signer)


def test_it_refuses_a_blocked_key(signer: Signer, ca: CertificateAuthority, alice: User) -> None:
    work = draft(ca, alice, approver=None)
    BlockedKey.objects.create(
        spki_sha256=keypolicy.spki_sha256(work.key.public_key()),
        source=BlockedKeySource.OPERATOR,
        created_at=work.not_before,
    )
    assert "compromised or is known to be unsafe" in _refusal(work, signer)


def test_it_refuses_a_key_the_authorisation_does_not_name(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None).but(key=ec.generate_private_key(ec.SECP256R1()))
    assert "names another key" in _refusal(work, signer)


def test_it_refuses_a_validity_beyond_the_profile(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None)
    longer = work.but(not_after=work.not_before + dt.timedelta(days=3 * 365))
    assert "beyond the profile's 365 days" in _refusal(longer, signer)


def test_it_refuses_a_not_after_other_than_the_reserved_one(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None)
    shorter = work.but(not_after=work.not_after - dt.timedelta(days=1))
    assert "was reserved for a certificate with another notAfter" in _refusal(shorter, signer)


def test_it_refuses_a_serial_that_was_not_reserved(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None)
    other = draft(ca, alice, approver=None)
    other.reservation.delete()  # the same draft with a serial nobody reserved
    other.reservation.pk = None
    assert "was never reserved" in _refusal(work.but(reservation=other.reservation), signer)


def test_it_refuses_a_certificate_naming_another_ca_as_issuer(
    signer: Signer, ca: CertificateAuthority, alice: User
) -> None:
    other = authorities.create_ca(name="Other CA", slug="other-ca")
    work = draft(ca, alice, approver=None).but(issuer=other.certificate)
    assert "not CA 'test-root'" in _refusal(work, signer)


def test_it_refuses_a_uid_that_is_not_allowed(signer: Signer, ca: CertificateAuthority, alice: User) -> None:
    signer.allowed = {4_000_000}  # a list that leaves out this process's uid
    work = draft(ca, alice, approver=None)
    assert "is not allowed to use the signer" in _refusal(work, signer)
