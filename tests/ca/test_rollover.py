"""CA rollover (manage.py rollover_ca, ca.services.rollover): a new key generation of the same CA, the link
certificates between the old key and the new one, issuance moving to the new key while the old one keeps
its CRL and OCSP answers, and the CA bundle front servers fetch."""

from __future__ import annotations

import base64
import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks

from ca import crlsync
from ca.errors import CAError
from ca.models import (
    AuditEntry,
    AuditEvent,
    Certificate,
    CertificateAuthority,
    CrlPublication,
    FrontServer,
    ReservationState,
    RevocationReason,
    SerialReservation,
)
from ca.pki.keys import CAKeyType
from ca.pki.rollover import CRL_LINE, is_link
from ca.pki.serials import format_serial
from ca.services import ocsp as ocsp_service
from ca.services import rollover as rollover_service
from ca.services.authorities import create_ca
from ca.services.crl import publish_crl
from ca.services.issuance import reserve
from ca.services.revocation import revoke_certificate
from ca.services.rollover import Rollover, ca_bundle, rollover_ca
from tests.conftest import need_program
from tests.helpers import signed_by

pytestmark = pytest.mark.django_db

PEM = serialization.Encoding.PEM


def ski(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def aki(certificate: x509.Certificate) -> bytes | None:
    return certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def latest_crl(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(bytes(CrlPublication.objects.filter(ca=ca).latest().der))


def revoke(certificate: Certificate, captured: DjangoCaptureOnCommitCallbacks) -> None:
    with captured(execute=True):
        revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)


@pytest.fixture
def rolled(ca: CertificateAuthority) -> Rollover:
    return rollover_ca(ca=ca)


def test_it_makes_a_new_generation_with_the_same_subject_a_new_key_and_its_own_urls(
    ca: CertificateAuthority, rolled: Rollover
) -> None:
    old, new = rolled.old, rolled.new
    assert new.slug == "test-root-2"
    assert new.previous == old
    assert new.certificate.subject == old.certificate.subject
    assert new.name == old.name
    assert new.key_type == old.key_type == CAKeyType.EC_P256
    assert ski(new.certificate) != ski(old.certificate)
    assert new.certificate.serial_number != old.certificate.serial_number
    assert new.certificate.issuer == new.certificate.subject  # a root signs its own
    new.certificate.verify_directly_issued_by(new.certificate)
    assert new.urls.crl_url.endswith("/pki/test-root-2.crl")
    assert old.urls.crl_url.endswith("/pki/test-root.crl")
    # the default moves, the old row is kept with its key
    assert new.is_default
    assert not old.is_default
    assert ca.newest_generation() == new
    assert (
        [g.slug for g in new.generations()]
        == [g.slug for g in old.generations()]
        == ["test-root", "test-root-2"]
    )
    # a first CRL of the new generation, signed by its key
    assert signed_by(latest_crl(new), new.certificate)
    entry = AuditEntry.objects.get(event=AuditEvent.CA_ROLLED_OVER)
    assert entry.ca_slug == "test-root-2"
    assert "test-root issues no more" in entry.detail


def test_the_link_certificates_join_the_two_keys_with_the_ca_profile(rolled: Rollover) -> None:
    old, new = rolled.old.certificate, rolled.new.certificate
    old_signs_new, new_signs_old = rolled.old_signs_new, rolled.new_signs_old
    assert old_signs_new.public_key() == new.public_key()
    assert new_signs_old.public_key() == old.public_key()
    old_signs_new.verify_directly_issued_by(old)
    new_signs_old.verify_directly_issued_by(new)
    for link, signer, certified in ((old_signs_new, old, new), (new_signs_old, new, old)):
        assert link.subject == link.issuer == old.subject
        assert is_link(link)
        assert not is_link(certified)
        constraints = link.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value.ca
        assert constraints.value.path_length is None  # a root's profile
        usage = link.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.key_cert_sign
        assert usage.value.crl_sign
        assert ski(link) == ski(certified)
        assert aki(link) == ski(signer)
        assert link.not_valid_after_utc <= min(signer.not_valid_after_utc, certified.not_valid_after_utc)
    # both stored on the new generation, and their serials recorded on the CA that signed each
    assert rolled.new.link_certificates == (old_signs_new, new_signs_old)
    for ca, link in ((rolled.old, old_signs_new), (rolled.new, new_signs_old)):
        reservation = SerialReservation.objects.get(ca=ca, serial=format_serial(serial=link.serial_number))
        assert reservation.state == ReservationState.ISSUED


def test_new_issuance_moves_to_the_newest_generation_whichever_is_asked_for(
    ca: CertificateAuthority, alice: User, bob: User, issue_for: Callable[..., Certificate]
) -> None:
    before = issue_for(alice)
    assert before.ca == ca
    rolled = rollover_ca(ca=ca)
    after = issue_for(bob)
    assert after.ca == rolled.new
    after.x509.verify_directly_issued_by(rolled.new.certificate)
    assert aki(after.x509) == ski(rolled.new.certificate)
    crl_urls = after.x509.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_urls[0].full_name[0].value.endswith("/pki/test-root-2.crl")
    # the certificate issued before keeps pointing at the old generation's CRL
    old_urls = before.x509.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert old_urls[0].full_name[0].value.endswith("/pki/test-root.crl")
    # asking for the old generation by name issues under the new key too
    assert reserve(purposes=["x"], ca=ca).ca == rolled.new


def test_the_old_crl_stays_published_by_the_old_key_and_revocations_land_on_the_right_crl(
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: Callable[..., Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    old_client = issue_for(alice)
    rolled = rollover_ca(ca=ca)
    new_client = issue_for(bob)

    revoke(old_client, django_capture_on_commit_callbacks)
    old_crl, new_crl = latest_crl(rolled.old), latest_crl(rolled.new)
    assert signed_by(old_crl, rolled.old.certificate)
    assert not signed_by(old_crl, rolled.new.certificate)
    assert old_crl.get_revoked_certificate_by_serial_number(old_client.serial_int) is not None
    assert new_crl.get_revoked_certificate_by_serial_number(old_client.serial_int) is None

    revoke(new_client, django_capture_on_commit_callbacks)
    new_crl = latest_crl(rolled.new)
    assert signed_by(new_crl, rolled.new.certificate)
    assert new_crl.get_revoked_certificate_by_serial_number(new_client.serial_int) is not None
    assert latest_crl(rolled.old).get_revoked_certificate_by_serial_number(new_client.serial_int) is None

    # a republish of the old generation is still signed by the old key
    republished = publish_crl(ca=rolled.old)
    assert signed_by(x509.load_der_x509_crl(bytes(republished.der)), rolled.old.certificate)


def _ask(client: Client, certificate: Certificate) -> ocsp.OCSPResponse:
    body = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate.x509, certificate.ca.certificate, hashes.SHA1())  # noqa: S303
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = client.post(reverse("ca:responder"), data=body, content_type="application/ocsp-request")
    assert response.status_code == 200
    return ocsp.load_der_ocsp_response(response.content)


def test_ocsp_tells_two_generations_with_the_same_name_apart_by_the_key_hash(
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: Callable[..., Certificate],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    old_client = issue_for(alice)
    rolled = rollover_ca(ca=ca)
    new_client = issue_for(bob)
    ocsp_service.clear_caches()
    revoke(old_client, django_capture_on_commit_callbacks)

    old_answer, new_answer = _ask(client, old_client), _ask(client, new_client)
    assert old_answer.issuer_name_hash == new_answer.issuer_name_hash  # one name, two keys
    assert old_answer.issuer_key_hash != new_answer.issuer_key_hash
    assert old_answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert new_answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    for answer, generation in ((old_answer, rolled.old), (new_answer, rolled.new)):
        assert answer.serial_number in {old_client.serial_int, new_client.serial_int}
        key = generation.certificate.public_key()
        assert answer.responder_key_hash == ski(generation.certificate) or answer.responder_name == (
            generation.certificate.subject
        )
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm))  # type: ignore[arg-type]

    # the serial of the new generation's certificate asked of the old key is not the old CA's certificate
    swapped = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            old_answer.issuer_name_hash,
            old_answer.issuer_key_hash,
            new_client.serial_int,
            hashes.SHA1(),  # noqa: S303
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = client.post(reverse("ca:responder"), data=swapped, content_type="application/ocsp-request")
    assert ocsp.load_der_ocsp_response(response.content).certificate_status == ocsp.OCSPCertStatus.UNKNOWN

    # each link certificate is a good certificate of the generation that signed it
    for link, signer in ((rolled.old_signs_new, rolled.old), (rolled.new_signs_old, rolled.new)):
        body = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(link, signer.certificate, hashes.SHA1())  # noqa: S303
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        response = client.post(reverse("ca:responder"), data=body, content_type="application/ocsp-request")
        assert ocsp.load_der_ocsp_response(response.content).certificate_status == ocsp.OCSPCertStatus.GOOD


@pytest.fixture
def openssl() -> str:
    return need_program("openssl")


def test_the_links_verify_with_openssl_in_both_directions(
    openssl: str,
    tmp_path: Path,
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    issue_for: Callable[..., Certificate],
) -> None:
    old_client = issue_for(alice)
    rolled = rollover_ca(ca=ca)
    new_client = issue_for(bob)

    def write(name: str, certificate: x509.Certificate) -> str:
        path = tmp_path / name
        path.write_bytes(certificate.public_bytes(PEM))
        return str(path)

    files = {
        "old": write("old.pem", rolled.old.certificate),
        "new": write("new.pem", rolled.new.certificate),
        "old_signs_new": write("old-signs-new.pem", rolled.old_signs_new),
        "new_signs_old": write("new-signs-old.pem", rolled.new_signs_old),
        "old_client": write("old-client.pem", old_client.x509),
        "new_client": write("new-client.pem", new_client.x509),
    }

    def verify(trusted: str, untrusted: str | None, leaf: str) -> subprocess.CompletedProcess[str]:
        argv = [openssl, "verify", "-x509_strict", "-CAfile", files[trusted]]
        if untrusted:
            argv += ["-untrusted", files[untrusted]]
        return subprocess.run([*argv, files[leaf]], capture_output=True, text=True, check=False)

    # whoever trusts only the old key reaches the new one through old-signs-new, and the reverse
    assert verify("old", "old_signs_new", "new_client").returncode == 0, verify(
        "old", "old_signs_new", "new_client"
    )
    assert verify("new", "new_signs_old", "old_client").returncode == 0, verify(
        "new", "new_signs_old", "old_client"
    )
    # each link on its own chains to the key that signed it
    assert verify("old", None, "old_signs_new").returncode == 0
    assert verify("new", None, "new_signs_old").returncode == 0
    # without the link, neither key vouches for the other's certificates
    assert verify("old", None, "new_client").returncode != 0
    assert verify("new", None, "old_client").returncode != 0


def test_an_intermediate_rolls_over_under_its_parents_newest_generation(db: None) -> None:
    root = create_ca(name="Root CA", slug="root")
    issuing = create_ca(name="Issuing CA", slug="issuing", parent=root, make_default=True)
    new_root = rollover_ca(ca=root).new
    assert issuing.parent == root
    rolled = rollover_ca(ca=issuing)
    assert rolled.new.slug == "issuing-2"
    assert rolled.new.parent == new_root
    rolled.new.certificate.verify_directly_issued_by(new_root.certificate)
    assert rolled.new.is_default
    # the intermediate profile carries over: pathLenConstraint 0 on its links as on its certificate
    for link in (rolled.old_signs_new, rolled.new_signs_old):
        assert link.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    # the bundle of the issuing CA holds every generation of both, roots first, and the links
    bundle = x509.load_pem_x509_certificates(ca_bundle(rolled.new))
    generations = [c for c in bundle if not is_link(c)]
    assert [c.fingerprint(hashes.SHA256()).hex() for c in generations] == [
        g.fingerprint_sha256 for g in (root, new_root, issuing, rolled.new)
    ]
    assert sum(1 for c in bundle if is_link(c)) == 4


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("replaced", "was rolled over already: its newest key generation is 'test-root-2'"),
        ("revoked", "is revoked"),
        ("slug-taken", "is taken"),
    ],
)
def test_it_refuses_what_cannot_be_rolled_over_and_says_what_to_do(
    ca: CertificateAuthority, case: str, message: str
) -> None:
    kwargs: dict[str, object] = {}
    if case == "replaced":
        rollover_ca(ca=ca)
    elif case == "revoked":
        CertificateAuthority.objects.filter(pk=ca.pk).update(revoked_at=ca.created_at)
    else:
        create_ca(name="Other", slug="other")
        kwargs["slug"] = "other"
    count = CertificateAuthority.objects.count()
    with pytest.raises(CAError, match=message):
        rollover_ca(ca=ca, **kwargs)  # type: ignore[arg-type]
    assert CertificateAuthority.objects.count() == count


def test_two_rollovers_of_one_ca_at_once_the_second_is_refused_in_plain_words(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollover_ca(ca=ca)
    count = CertificateAuthority.objects.count()
    # the second command checked before the first one saved: it finds out only when it saves
    monkeypatch.setattr(rollover_service, "_refusal", lambda ca, now: None)

    with pytest.raises(CAError, match="rolled over by another command at the same time"):
        rollover_ca(ca=CertificateAuthority.objects.get(pk=ca.pk), slug="test-root-late")

    assert CertificateAuthority.objects.count() == count


def test_front_servers_that_carried_the_old_crl_are_asked_for_the_new_one(ca: CertificateAuthority) -> None:
    front = FrontServer.objects.create(name="web1", public_key=b"\0" * 32, created_at=ca.created_at)
    front.cas.add(ca)
    rolled = rollover_ca(ca=ca)
    assert set(front.cas.all()) == {rolled.old, rolled.new}


def test_the_bundle_url_serves_every_valid_generation_with_its_crl_url_and_the_links(
    client: Client, ca: CertificateAuthority
) -> None:
    rolled = rollover_ca(ca=ca)
    for slug in ("test-root", "test-root-2"):  # any generation's slug answers
        response = client.get(reverse("ca:bundle", kwargs={"slug": slug}))
        assert response.status_code == 200
        assert response["Content-Type"] == "application/x-pem-file"
        text = response.content.decode()
        assert text.count("-----BEGIN CERTIFICATE-----") == 4
        crl_lines = [line for line in text.splitlines() if line.startswith(CRL_LINE)]
        assert crl_lines == [
            CRL_LINE + rolled.old.public_url("ca:crl-pem"),
            CRL_LINE + rolled.new.public_url("ca:crl-pem"),
        ]
        again = client.get(reverse("ca:bundle", kwargs={"slug": slug}), HTTP_IF_NONE_MATCH=response["ETag"])
        assert again.status_code == 304
    assert client.get(reverse("ca:bundle", kwargs={"slug": "nope"})).status_code == 404


def test_a_ca_named_outside_ascii_gets_an_ascii_bundle_that_enroll_crl_sync_reads(client: Client) -> None:
    ca = create_ca(name="Société Générale Clients", slug="societe")
    rolled = rollover_ca(ca=ca)

    response = client.get(reverse("ca:bundle", kwargs={"slug": "societe"}))

    assert response.status_code == 200
    text = response.content.decode("ascii")
    assert "Soci\\xe9t\\xe9 G\\xe9n\\xe9rale Clients" in text
    entries = crlsync.parse_ca_bundle(response.content, url="http://pki.example.test/bundle.pem")
    assert [entry.crl_url for entry in entries if entry.crl_url] == [
        rolled.old.public_url("ca:crl-pem"),
        rolled.new.public_url("ca:crl-pem"),
    ]


def test_the_command_prints_the_new_slug_urls_fingerprints_and_next_steps(ca: CertificateAuthority) -> None:
    out = io.StringIO()
    call_command("rollover_ca", "test-root", stdout=out)
    text = out.getvalue()
    new = CertificateAuthority.objects.get(slug="test-root-2")
    assert text.splitlines()[-1] == "test-root-2"
    assert new.public_url("ca:crl-der") in text
    assert new.certificate.fingerprint(hashes.SHA256()).hex(":").upper() in text
    assert "--ca-bundle-url" in text
    with pytest.raises(CommandError, match="rolled over already"):
        call_command("rollover_ca", "test-root", stdout=io.StringIO())
    with pytest.raises(CommandError, match="There is no CA with the slug 'nope'"):
        call_command("rollover_ca", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--days"):
        call_command("rollover_ca", "test-root-2", "--days", "0", stdout=io.StringIO())


def test_a_new_key_type_can_be_chosen(ca: CertificateAuthority) -> None:
    rolled = rollover_ca(ca=ca, key_type=CAKeyType.EC_P384)
    assert rolled.new.key_type == CAKeyType.EC_P384
    rolled.old_signs_new.verify_directly_issued_by(rolled.old.certificate)
    rolled.new_signs_old.verify_directly_issued_by(rolled.new.certificate)


def test_est_and_scep_addresses_of_the_old_slug_serve_the_newest_generation(
    client: Client, ca: CertificateAuthority
) -> None:
    rolled = rollover_ca(ca=ca)
    response = client.get("/.well-known/est/test-root/cacerts", secure=True)
    assert response.status_code == 200
    chain = pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))
    assert [c.fingerprint(hashes.SHA256()).hex() for c in chain] == [rolled.new.fingerprint_sha256]
    scep = client.get("/scep/test-root", {"operation": "GetCACert"})
    assert scep.status_code == 200, scep.content
    served = {c.fingerprint(hashes.SHA256()).hex() for c in pkcs7.load_der_pkcs7_certificates(scep.content)}
    assert rolled.new.fingerprint_sha256 in served
    assert rolled.old.fingerprint_sha256 not in served
