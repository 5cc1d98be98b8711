"""CRLs and OCSP answers signed through the signer: what the database says is signed, anything else is
refused (a serial the CA did not revoke, a CRL number not above the last, a status the database does not
have)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.test import override_settings

from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, CrlPublication, RevocationReason
from ca.pki import crl as pki_crl
from ca.pki import ocsp as pki_ocsp
from ca.pki.errors import CAKeyError
from ca.pki.serials import new_serial
from ca.services import crl, ocsp, revocation
from ca.signer.client import SignerBackend
from ca.signer.server import Signer
from tests.ca.test_ocsp import ocsp_request


@pytest.fixture
def revoked(ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]) -> Certificate:
    """A certificate issued and revoked in process (before the portal signs through the signer)."""
    certificate = issue_for(alice)
    revocation.revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    return certificate


def _crl(ca: CertificateAuthority, signer: Signer, *, number: int, serials: list[int]) -> None:
    now = utcnow()
    pki_crl.build_crl(
        issuer=ca.certificate,
        backend=SignerBackend(ca=ca, path=signer.path),
        number=number,
        this_update=now.replace(microsecond=0),
        next_update=now.replace(microsecond=0) + crl.crl_lifetime(),
        entries=[pki_crl.CrlEntry(serial=s, revoked_at=now, reason=None) for s in serials],
    )


def test_it_signs_the_crl_the_database_has_and_refuses_others(
    signer: Signer, ca: CertificateAuthority, revoked: Certificate
) -> None:
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        published = crl.publish_crl(ca=ca)
    assert signer.memory.crl_numbers[ca.pk] == published.number  # the signer signed it
    listed = x509.load_der_x509_crl(bytes(published.der))
    assert listed.get_revoked_certificate_by_serial_number(revoked.serial_int) is not None
    last = CrlPublication.objects.filter(ca=ca).order_by("-number").first()
    assert last is not None

    with pytest.raises(CAKeyError, match="did not revoke"):
        _crl(ca, signer, number=last.number + 10, serials=[revoked.serial_int, new_serial()])
    with pytest.raises(CAKeyError, match="is not above"):
        _crl(ca, signer, number=last.number, serials=[revoked.serial_int])


def test_it_signs_ocsp_answers_as_the_database_has_them_and_refuses_a_false_good(
    signer: Signer, ca: CertificateAuthority, revoked: Certificate
) -> None:
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        ocsp.clear_caches()
        answer = ocsp.ocsp_response(request_der=ocsp_request(revoked))
    assert answer.status == "revoked"

    question = pki_ocsp.read_request(request_der=ocsp_request(revoked))
    assert isinstance(question, pki_ocsp.OcspQuestion)
    with pytest.raises(CAKeyError, match="the database says revoked"):
        pki_ocsp.answer(
            question=question,
            issuer=ca.certificate,
            backend=SignerBackend(ca=ca, path=signer.path),
            state=pki_ocsp.CertificateState(),  # "good"
            now=utcnow(),
            validity=dt.timedelta(seconds=4),
        )
