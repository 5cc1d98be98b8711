"""The OCSP responder (RFC 6960): with the Django test client and with real `openssl ocsp`."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import algos as asn1_algos
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.authorities import create_ca
from ca.services.export import ca_certificate_pem, export_certificate
from ca.services.revocation import revoke_certificate
from enroll import flows
from tests.conftest import make_csr, need_program


def ocsp_request(
    certificate: Certificate, *, nonce: bytes | None = None, algorithm: hashes.HashAlgorithm | None = None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate.x509,
        certificate.ca.certificate,
        algorithm or hashes.SHA1(),  # noqa: S303 (RFC 5019 CertIDs use SHA-1)
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post(client: Client, ca: CertificateAuthority, body: bytes) -> ocsp.OCSPResponse:
    response = client.post(
        reverse("ca:ocsp", kwargs={"slug": ca.slug}), data=body, content_type="application/ocsp-request"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


@pytest.fixture
def certificate(ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]) -> Certificate:
    return issue_for(alice)


def test_issued_certificates_name_the_responder_in_their_aia(certificate: Certificate) -> None:
    aia = certificate.x509.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_urls = [
        d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    assert ocsp_urls == ["http://pki.example.test/pki/ocsp"]  # one URL for every CA of the portal


def test_it_answers_good_then_revoked_with_time_and_reason(client: Client, certificate: Certificate) -> None:
    answer = post(client, certificate.ca, ocsp_request(certificate))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == certificate.serial_int
    issuer_key = certificate.ca.certificate.public_key()
    assert isinstance(issuer_key, ec.EllipticCurvePublicKey)
    assert answer.signature_hash_algorithm is not None
    issuer_key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm))
    revocation = revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    answer = post(client, certificate.ca, ocsp_request(certificate))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise
    assert answer.revocation_time_utc == revocation.revoked_at.replace(microsecond=0)


def test_an_unspecified_revocation_has_no_reason(client: Client, certificate: Certificate) -> None:
    revoke_certificate(certificate=certificate, reason=RevocationReason.UNSPECIFIED)
    answer = post(client, certificate.ca, ocsp_request(certificate))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is None


def test_it_echoes_the_nonce_and_forbids_caching_then(client: Client, certificate: Certificate) -> None:
    nonce = b"0123456789abcdef"
    answer = post(client, certificate.ca, ocsp_request(certificate, nonce=nonce))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_a_serial_it_never_issued_is_unknown(
    client: Client, certificate: Certificate, ca: CertificateAuthority
) -> None:
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *_issuer_hashes(certificate),
        serial_number=12345,
        algorithm=hashes.SHA1(),  # noqa: S303
    )
    answer = post(client, ca, builder.build().public_bytes(serialization.Encoding.DER))
    assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def _issuer_hashes(certificate: Certificate) -> tuple[bytes, bytes]:
    request = ocsp.load_der_ocsp_request(ocsp_request(certificate))
    return request.issuer_name_hash, request.issuer_key_hash


@pytest.mark.parametrize("algorithm", ["md5", "1.2.3.4.5"])
def test_a_cert_id_with_a_hash_it_does_not_use_is_unauthorized(
    client: Client, certificate: Certificate, algorithm: str
) -> None:
    request = asn1_ocsp.OCSPRequest.load(ocsp_request(certificate))
    cert_id = request["tbs_request"]["request_list"][0]["req_cert"]
    cert_id["hash_algorithm"] = asn1_algos.DigestAlgorithm({"algorithm": algorithm})
    answer = post(client, certificate.ca, request.dump(force=True))
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_any_ca_url_answers_for_every_ca_the_portal_hosts(client: Client, certificate: Certificate) -> None:
    """The CertID chooses the CA (RFC 6960 4.1.1): nginx sends the whole chain to one responder URL."""
    other = create_ca(name="Other CA")
    answer = post(client, other, ocsp_request(certificate))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == certificate.serial_int


def test_a_request_about_a_ca_the_portal_does_not_host_is_unauthorized(
    client: Client, certificate: Certificate
) -> None:
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Somebody Else's CA")])
    point = stranger_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        _sha1(name.public_bytes()),
        _sha1(point),
        serial_number=certificate.serial_int,
        algorithm=hashes.SHA1(),  # noqa: S303
    )
    answer = post(client, certificate.ca, builder.build().public_bytes(serialization.Encoding.DER))
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def _sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303
    digest.update(data)
    return digest.finalize()


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256(), hashes.SHA512()], ids=lambda a: a.name)  # noqa: S303
def test_an_issuing_ca_is_answered_by_its_parent_with_any_cert_id_hash(
    client: Client, ca: CertificateAuthority, algorithm: hashes.HashAlgorithm
) -> None:
    issuing = create_ca(name="Issuing CA", parent=ca)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issuing.certificate, ca.certificate, algorithm)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = post(client, issuing, request)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == issuing.certificate.serial_number
    assert answer.next_update_utc is not None


def test_an_answer_is_reused_until_the_status_changes(client: Client, certificate: Certificate) -> None:
    first = post(client, certificate.ca, ocsp_request(certificate))
    again = post(client, certificate.ca, ocsp_request(certificate))
    assert again.public_bytes(serialization.Encoding.DER) == first.public_bytes(serialization.Encoding.DER)
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    after = post(client, certificate.ca, ocsp_request(certificate))
    assert after.certificate_status == ocsp.OCSPCertStatus.REVOKED


def test_a_request_with_a_nonce_is_signed_afresh(client: Client, certificate: Certificate) -> None:
    first = post(client, certificate.ca, ocsp_request(certificate, nonce=b"a" * 16))
    second = post(client, certificate.ca, ocsp_request(certificate, nonce=b"b" * 16))
    assert first.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"a" * 16
    assert second.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"b" * 16


@pytest.mark.parametrize("body", [b"\x00", b"\x30\x03\x02\x01\x01", b"garbage" * 10, b"\x30" * 5000])
def test_malformed_requests_get_malformed_request(
    client: Client, ca: CertificateAuthority, body: bytes
) -> None:
    answer = post(client, ca, body)
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_get_requests_work_and_are_cacheable(client: Client, certificate: Certificate) -> None:
    encoded = base64.b64encode(ocsp_request(certificate, algorithm=hashes.SHA256())).decode()
    response = client.get(f"/pki/{certificate.ca.slug}/ocsp/{encoded}")
    assert response.status_code == 200
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert "max-age=" in response["Cache-Control"]
    max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 300
    assert response["ETag"]


def test_a_get_with_bad_base64_is_a_malformed_request(client: Client, ca: CertificateAuthority) -> None:
    response = client.get(f"/pki/{ca.slug}/ocsp/not*base64")
    assert response.status_code == 200
    assert (
        ocsp.load_der_ocsp_response(response.content).response_status
        == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


def test_a_post_of_another_content_type_is_refused(client: Client, ca: CertificateAuthority) -> None:
    response = client.post(reverse("ca:ocsp", kwargs={"slug": ca.slug}), data={"a": "b"})
    assert response.status_code == 415


def test_the_slug_of_a_per_ca_url_is_only_a_hint(client: Client, certificate: Certificate) -> None:
    response = client.post(
        "/pki/nope/ocsp", data=ocsp_request(certificate), content_type="application/ocsp-request"
    )
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.content).certificate_status == ocsp.OCSPCertStatus.GOOD


def test_the_one_responder_url_answers_post_and_get(client: Client, certificate: Certificate) -> None:
    request = ocsp_request(certificate, algorithm=hashes.SHA256())
    posted = client.post(reverse("ca:responder"), data=request, content_type="application/ocsp-request")
    encoded = base64.b64encode(request).decode()
    got = client.get(reverse("ca:responder-get", kwargs={"encoded": encoded}))
    for response in (posted, got):
        assert response.status_code == 200
        assert ocsp.load_der_ocsp_response(response.content).certificate_status == ocsp.OCSPCertStatus.GOOD


@pytest.mark.real_client
@pytest.mark.django_db(transaction=True)
def test_openssl_ocsp_reports_good_then_revoked(live_server: LiveServer, tmp_path: Path) -> None:
    openssl = need_program("openssl")
    user = User.objects.create_user("carol", "carol@example.com")
    ca = create_ca(name="OCSP CA", make_default=True)
    request = flows.submit_csr(owner=user, data=make_csr())
    certificate = flows.approve(request_id=request.pk).certificate
    assert certificate is not None
    (tmp_path / "ca.pem").write_bytes(ca_certificate_pem(ca))
    (tmp_path / "cert.pem").write_bytes(export_certificate(certificate=certificate, fmt="pem").content)
    url = f"{live_server.url}/pki/{ca.slug}/ocsp"

    def ask() -> str:
        result = subprocess.run(
            [
                openssl,
                "ocsp",
                "-issuer",
                str(tmp_path / "ca.pem"),
                "-cert",
                str(tmp_path / "cert.pem"),
                "-url",
                url,
                "-CAfile",
                str(tmp_path / "ca.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "Response verify OK" in result.stderr + result.stdout, result.stderr + result.stdout
        return result.stdout

    assert f"{tmp_path / 'cert.pem'}: good" in ask()
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    output = ask()
    assert f"{tmp_path / 'cert.pem'}: revoked" in output
    assert "Reason: keyCompromise" in output
