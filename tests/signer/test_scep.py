"""SCEP with the signer: every CA answers through an RSA RA (an RSA key-file CA too), the RA key decrypts and
signs only in the signer (a web worker opens no RA key file), the signer never does either with a CA key
nor signs anything but CMS signed attributes with the RA key, and only ``manage.py scep_ra`` run as the
signer's user makes an RA (the web side says so with a 503 until then)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings
from pytest_django.fixtures import Settings

from ca.errors import CAError
from ca.models import CertificateAuthority, ScepRaCertificate
from ca.pki import scep
from ca.pki.errors import CAKeyError
from ca.pki.keys import CAKeyType
from ca.services import authorities
from ca.services import scep as scep_service
from ca.signer import client
from ca.signer.server import Signer
from enroll import flows
from enroll.models import RequestStatus
from tests.enroll.test_scep import csr, message, new_device, post, server_certificate


@pytest.fixture
def rsa_ca(db: None) -> CertificateAuthority:
    """An RSA key-file CA: without the signer it decrypts and signs SCEP itself."""
    return authorities.create_ca(
        name="SCEP RSA CA", slug="scep-rsa", make_default=True, key_type=CAKeyType.RSA_3072
    )


def make_ra(signer: Signer, ca: CertificateAuthority) -> ScepRaCertificate:
    """``manage.py scep_ra`` as the signer's user: the signer's socket set, the CA key at hand."""
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        call_command("scep_ra", ca=ca.slug, stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert client.role.signer is False  # the command gives the thread back as it found it
    return ScepRaCertificate.objects.get(ca=ca)


def test_an_rsa_ca_answers_through_an_ra_whose_key_works_only_in_the_signer(
    signer: Signer, rsa_ca: CertificateAuthority, alice: User, admin_user: User, settings: Settings
) -> None:
    ra = make_ra(signer, rsa_ca)
    _row, code = flows.create_enrollment_code(owner=alice, created_by=admin_user, device_name="router")
    device = new_device()
    web = Client()
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        identity = scep_service.identity_for(ca=rsa_ca)
        assert isinstance(identity.key, client.SignerRaKey)  # no RSA key object in this process
        assert identity.ra == ra
        assert server_certificate(web) == bytes(ra.certificate_der)  # GetCACert: the RA, not the CA
        answer = post(web, message(web, device, csr(device.key, code)))

    assert answer.status_code == 200, answer.content
    reply = scep.read_cert_rep(
        data=answer.content, requester_key=device.key, requester_certificate_der=device.signer_der
    )
    assert reply.status == scep.PkiStatus.SUCCESS, reply
    assert alice.enrollment_requests.get().status == RequestStatus.ISSUED


def test_the_web_side_makes_no_ra_and_says_who_does(
    signer: Signer, ca: CertificateAuthority, settings: Settings
) -> None:
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        with pytest.raises(CAError, match=r"runs 'manage.py scep_ra --ca test-root' as the signer's user"):
            scep_service.identity_for(ca=ca)
        answer = Client().get("/scep", {"operation": "GetCACert"})
    assert answer.status_code == 503
    assert not ScepRaCertificate.objects.exists()


def test_the_signer_uses_the_ra_key_for_signed_attributes_only_and_never_a_ca_key(
    signer: Signer, ca: CertificateAuthority
) -> None:
    ra = make_ra(signer, ca)
    ra_key = client.SignerRaKey(ca=ca.slug, fingerprint=ra.fingerprint_sha256, path=signer.path)
    as_ca = client.SignerRaKey(ca=ca.slug, fingerprint=ca.fingerprint_sha256, path=signer.path)
    elsewhere = client.SignerRaKey(ca="no-such-ca", fingerprint=ra.fingerprint_sha256, path=signer.path)
    attributes = b"\x31\x00"  # an empty SET: no contentType, no messageDigest

    with pytest.raises(CAKeyError, match="the signed attributes lack content_type, message_digest"):
        ra_key.sign(attributes, PKCS1v15(), hashes.SHA256())
    with pytest.raises(CAKeyError, match="signs CMS signed attributes only"):
        ra_key.sign(b"\x30\x03\x02\x01\x00", PKCS1v15(), hashes.SHA256())
    with pytest.raises(CAKeyError, match="has no SCEP RA certificate"):
        as_ca.decrypt(b"\x00" * 384, PKCS1v15())
    with pytest.raises(CAKeyError, match="has no SCEP RA certificate"):
        elsewhere.decrypt(b"\x00" * 384, PKCS1v15())
    public_key = ra.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    content_key = os.urandom(32)
    assert ra_key.decrypt(public_key.encrypt(content_key, PKCS1v15()), PKCS1v15()) == content_key


def test_a_stopped_signer_makes_scep_answer_503(
    signer: Signer, ca: CertificateAuthority, alice: User, admin_user: User, tmp_path: Path
) -> None:
    make_ra(signer, ca)
    _row, code = flows.create_enrollment_code(owner=alice, created_by=admin_user, device_name="router")
    device = new_device()
    web = Client()
    with override_settings(ENROLL_SIGNER_SOCKET=signer.path):
        request = message(web, device, csr(device.key, code))
    with override_settings(ENROLL_SIGNER_SOCKET=str(tmp_path / "stopped.sock")):
        answer = post(web, request)
    assert answer.status_code == 503
    assert not alice.enrollment_requests.exists()
