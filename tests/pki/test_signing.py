"""The one signing path (ca.pki.signing): a throwaway key gives the to-be-signed bytes, the key backend signs
them, the result is assembled and verified; for certificates, CRLs and OCSP responses, with every CA key
type, checked by openssl and by the CA's public key (no database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from ca.pki import signing
from ca.pki.crl import CrlEntry, build_crl
from ca.pki.errors import CAKeyError
from ca.pki.keys import CAKeyType, CAPrivateKey, generate_ca_key
from ca.pki.ocsp import CertificateState, OcspQuestion, answer, read_request
from ca.pki.profiles import (
    IssuerUrls,
    SubjectInfo,
    build_ca_certificate,
    build_ca_name,
    client_certificate_builder,
    get_profile,
)
from ca.pki.signing import CAPublicKey, Purpose, SignatureHash
from tests.harness.openssl import openssl

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # openssl verifies at the real time
URLS = IssuerUrls(
    crl_url="http://pki.example.test/pki/root.crl",
    ca_issuers_url="http://pki.example.test/pki/root.crt",
    ocsp_url="http://pki.example.test/pki/ocsp/root",
)
#: The signature hash each CA key type signs with (RFC 5480 section 4).
HASHES = {
    CAKeyType.EC_P256: "sha256",
    CAKeyType.EC_P384: "sha384",
    CAKeyType.RSA_3072: "sha256",
    CAKeyType.RSA_4096: "sha384",
}


@dataclass(frozen=True)
class Issuer:
    key_type: CAKeyType
    key: CAPrivateKey
    certificate: x509.Certificate

    @property
    def public_key(self) -> CAPublicKey:
        return self.key.public_key()


_issuers: dict[CAKeyType, Issuer] = {}


def issuer_of(key_type: CAKeyType) -> Issuer:
    """A root CA of ``key_type`` (made once per test process: RSA 4096 keys take a while)."""
    if key_type not in _issuers:
        key = generate_ca_key(key_type=key_type)
        certificate = build_ca_certificate(
            subject=build_ca_name(common_name=f"Signing Test Root {key_type}", organization="Enroll Tests"),
            key=key,
            serial=0x51_6E,
            not_before=NOW - dt.timedelta(days=1),
            not_after=NOW + dt.timedelta(days=3650),
        )
        _issuers[key_type] = Issuer(key_type, key, certificate)
    return _issuers[key_type]


@pytest.fixture(params=list(CAKeyType), ids=str)
def issuer(request: pytest.FixtureRequest) -> Issuer:
    return issuer_of(request.param)


@dataclass
class SpyBackend:
    """The CA's own key behind the backend interface, noting every call to sign."""

    key: CAPrivateKey
    calls: list[tuple[Purpose, bytes, str]] = field(default_factory=list)

    def public_key(self) -> CAPublicKey:
        return self.key.public_key()

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        self.calls.append((purpose, data, algorithm.name))
        return signing.PrivateKeyBackend(key=self.key).sign(data=data, algorithm=algorithm, purpose=purpose)


def leaf_builder(issuer: Issuer, *, serial: int = 0x1D_EA_5E) -> x509.CertificateBuilder:
    return client_certificate_builder(
        profile=get_profile(name="client"),
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        subject=SubjectInfo(common_name="alice", organization="Enroll Tests", email="alice@example.com"),
        issuer=issuer.certificate,
        serial=serial,
        not_before=NOW - dt.timedelta(minutes=5),
        not_after=NOW + dt.timedelta(days=365),
        urls=URLS,
    )


def pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def verify_signature(
    public_key: CAPublicKey, signature: bytes, data: bytes, algorithm: SignatureHash
) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        public_key.verify(signature, data, ec.ECDSA(algorithm))


# --- certificates -----------------------------------------------------------------------------------------


def test_a_certificate_signed_through_the_path_verifies_with_openssl_and_keeps_the_drafts_tbs(
    issuer: Issuer, tmp_path: Path
) -> None:
    backend = SpyBackend(issuer.key)
    draft = signing.draft_certificate(builder=leaf_builder(issuer), like=backend.public_key())

    final = signing.finish_certificate(draft=draft, backend=backend)

    assert final.tbs_certificate_bytes == draft.tbs_certificate_bytes
    assert final.signature_algorithm_oid == draft.signature_algorithm_oid
    assert final.signature_hash_algorithm is not None
    assert final.signature_hash_algorithm.name == HASHES[issuer.key_type]
    assert backend.calls == [(Purpose.CERTIFICATE, draft.tbs_certificate_bytes, HASHES[issuer.key_type])]
    final.verify_directly_issued_by(issuer.certificate)
    root, leaf = pem(tmp_path / "root.pem", issuer.certificate), pem(tmp_path / "leaf.pem", final)
    result = openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(root), str(leaf))
    assert result.returncode == 0, result.stderr.decode()
    assert b": OK" in result.stdout


def test_a_ca_certificate_made_through_the_path_verifies_with_openssl(issuer: Issuer, tmp_path: Path) -> None:
    root = pem(tmp_path / "root.pem", issuer.certificate)

    result = openssl("verify", "-x509_strict", "-CAfile", str(root), str(root))

    assert result.returncode == 0, result.stderr.decode()
    issuer.certificate.verify_directly_issued_by(issuer.certificate)


def test_sign_certificate_runs_the_check_on_the_draft_before_the_ca_key_signs(issuer: Issuer) -> None:
    backend = SpyBackend(issuer.key)
    seen: list[bytes] = []

    def refuse(draft: x509.Certificate) -> None:
        seen.append(draft.tbs_certificate_bytes)
        raise ValueError("lint says no")

    with pytest.raises(ValueError, match="lint says no"):
        signing.sign_certificate(builder=leaf_builder(issuer), backend=backend, check=refuse)

    assert len(seen) == 1
    assert backend.calls == []  # a refused draft costs no CA signature


# --- CRLs -------------------------------------------------------------------------------------------------


def test_a_crl_signed_through_the_path_verifies_with_openssl_and_its_tbs_is_what_the_key_signed(
    issuer: Issuer, tmp_path: Path
) -> None:
    backend = SpyBackend(issuer.key)
    entries = [
        CrlEntry(
            serial=0x1000 + n, revoked_at=NOW - dt.timedelta(hours=n), reason=x509.ReasonFlags.superseded
        )
        for n in range(50)
    ]

    crl = build_crl(
        issuer=issuer.certificate,
        backend=backend,
        number=42,
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
        entries=entries,
    )

    assert backend.calls == [(Purpose.CRL, crl.tbs_certlist_bytes, HASHES[issuer.key_type])]
    assert crl.is_signature_valid(issuer.public_key)
    assert len(crl) == 50
    draft = x509.CertificateRevocationListBuilder(
        issuer_name=crl.issuer,
        last_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
        extensions=list(crl.extensions),
        revoked_certificates=list(crl),
    ).sign(
        signing.throwaway_key(like=issuer.public_key), signing.signature_hash(public_key=issuer.public_key)
    )
    assert draft.tbs_certlist_bytes == crl.tbs_certlist_bytes
    path = tmp_path / "root.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    root = pem(tmp_path / "root.pem", issuer.certificate)
    result = openssl("crl", "-inform", "DER", "-in", str(path), "-CAfile", str(root), "-noout", "-verify")
    assert result.returncode == 0, result.stderr.decode()
    assert b"verify OK" in result.stdout + result.stderr


# --- OCSP responses ---------------------------------------------------------------------------------------


def ocsp_question(issuer: Issuer, *, nonce: bytes | None = None) -> OcspQuestion:
    leaf = signing.sign_certificate(
        builder=leaf_builder(issuer, serial=0x0C5), backend=SpyBackend(issuer.key)
    )
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer.certificate, hashes.SHA1())  # noqa: S303
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    question = read_request(request_der=builder.build().public_bytes(serialization.Encoding.DER))
    assert isinstance(question, OcspQuestion)
    return question


@pytest.mark.parametrize(
    "state",
    [
        CertificateState(),
        CertificateState(NOW - dt.timedelta(hours=1), x509.ReasonFlags.key_compromise),
        None,
    ],
    ids=["good", "revoked", "unknown"],
)
def test_an_ocsp_response_signed_through_the_path_verifies_with_the_ca_public_key(
    issuer: Issuer, state: CertificateState | None, tmp_path: Path
) -> None:
    backend = SpyBackend(issuer.key)

    result = answer(
        question=ocsp_question(issuer, nonce=b"n" * 16),
        issuer=issuer.certificate,
        backend=backend,
        state=state,
        now=NOW,
        validity=dt.timedelta(minutes=10),
    )

    response = ocsp.load_der_ocsp_response(result.der)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    algorithm = signing.signature_hash(public_key=issuer.public_key)
    assert backend.calls == [(Purpose.OCSP_RESPONSE, response.tbs_response_bytes, algorithm.name)]
    verify_signature(issuer.public_key, response.signature, response.tbs_response_bytes, algorithm)
    ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert response.responder_key_hash == ski.digest
    assert response.responder_name is None
    assert response.certificates == []
    assert response.serial_number == 0x0C5
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    assert response.signature_hash_algorithm is not None
    assert response.signature_hash_algorithm.name == HASHES[issuer.key_type]
    path, root = tmp_path / "response.der", pem(tmp_path / "root.pem", issuer.certificate)
    path.write_bytes(result.der)
    checked = openssl(
        "ocsp", "-respin", str(path), "-CAfile", str(root), "-verify_other", str(root), "-no_nonce"
    )
    assert checked.returncode == 0, checked.stderr.decode()
    assert b"Response verify OK" in checked.stderr + checked.stdout


# --- backends that do not sign with the CA key -----------------------------------------------------------


@dataclass
class WrongSignature(SpyBackend):
    """Signs other bytes than it was handed (a backend or token that is broken)."""

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        return super().sign(data=data + b"!", algorithm=algorithm, purpose=purpose)


@dataclass
class AnotherKey(SpyBackend):
    """Claims the CA's public key but signs with another key of the same type (the wrong token key)."""

    other: CAPrivateKey | None = None

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        self.calls.append((purpose, data, algorithm.name))
        assert self.other is not None
        return signing.PrivateKeyBackend(key=self.other).sign(data=data, algorithm=algorithm, purpose=purpose)


def wrong_signature(issuer: Issuer) -> SpyBackend:
    return WrongSignature(issuer.key)


def another_key(issuer: Issuer) -> SpyBackend:
    return AnotherKey(issuer.key, other=generate_ca_key(key_type=issuer.key_type))


BAD_BACKENDS = [
    pytest.param(wrong_signature, id="wrong-signature"),
    pytest.param(another_key, id="another-key"),
]


def sign_a_certificate(issuer: Issuer, backend: SpyBackend) -> object:
    return signing.sign_certificate(builder=leaf_builder(issuer), backend=backend)


def sign_a_crl(issuer: Issuer, backend: SpyBackend) -> object:
    return build_crl(
        issuer=issuer.certificate,
        backend=backend,
        number=1,
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
        entries=[],
    )


def sign_an_ocsp_response(issuer: Issuer, backend: SpyBackend) -> object:
    return answer(
        question=ocsp_question(issuer),
        issuer=issuer.certificate,
        backend=backend,
        state=CertificateState(),
        now=NOW,
        validity=dt.timedelta(minutes=10),
    )


@pytest.mark.parametrize(
    "sign",
    [
        pytest.param(sign_a_certificate, id="certificate"),
        pytest.param(sign_a_crl, id="crl"),
        pytest.param(sign_an_ocsp_response, id="ocsp"),
    ],
)
@pytest.mark.parametrize("bad_backend", BAD_BACKENDS)
@pytest.mark.parametrize("key_type", [CAKeyType.EC_P256, CAKeyType.RSA_3072], ids=str)
def test_a_signature_that_does_not_verify_with_the_ca_key_is_a_ca_key_error(
    key_type: CAKeyType,
    bad_backend: Callable[[Issuer], SpyBackend],
    sign: Callable[[Issuer, SpyBackend], object],
) -> None:
    issuer = issuer_of(key_type)
    backend = bad_backend(issuer)

    with pytest.raises(CAKeyError, match="does not verify with the CA certificate's public key"):
        sign(issuer, backend)

    assert len(backend.calls) == 1


# --- the throwaway key ------------------------------------------------------------------------------------


def spki(public_key: CAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_the_throwaway_key_is_never_the_ca_key_and_a_draft_does_not_verify_with_it(issuer: Issuer) -> None:
    throwaway = signing.throwaway_key(like=issuer.public_key)
    draft = signing.draft_certificate(builder=leaf_builder(issuer), like=issuer.public_key)

    assert spki(throwaway.public_key()) != spki(issuer.public_key)
    assert type(throwaway.public_key()) is type(issuer.public_key)  # same algorithm identifier
    assert draft.signature_algorithm_oid == issuer.certificate.signature_algorithm_oid
    with pytest.raises(InvalidSignature):
        draft.verify_directly_issued_by(issuer.certificate)
    draft.verify_directly_issued_by(  # it is the throwaway key's signature
        draft_issued_by(throwaway, issuer.certificate)
    )


def draft_issued_by(key: CAPrivateKey, like: x509.Certificate) -> x509.Certificate:
    """A certificate of ``key`` with ``like``'s name, to check a draft's signature against."""
    return (
        x509.CertificateBuilder()
        .subject_name(like.subject)
        .issuer_name(like.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(like.not_valid_before_utc)
        .not_valid_after(like.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )


def test_a_backend_is_accepted_only_with_the_key_of_the_ca_certificate(issuer: Issuer) -> None:
    other = issuer_of(CAKeyType.EC_P256 if issuer.key_type != CAKeyType.EC_P256 else CAKeyType.EC_P384)

    certified = signing.certified_public_key(backend=SpyBackend(issuer.key), certificate=issuer.certificate)

    assert spki(certified) == spki(issuer.public_key)
    with pytest.raises(CAKeyError, match="not the key of its certificate"):
        signing.certified_public_key(backend=SpyBackend(other.key), certificate=issuer.certificate)


def test_the_throwaway_key_is_made_once_per_process_and_curve() -> None:
    p256 = issuer_of(CAKeyType.EC_P256).public_key
    p384 = issuer_of(CAKeyType.EC_P384).public_key

    assert signing.throwaway_key(like=p256) is signing.throwaway_key(like=p256)
    assert signing.throwaway_key(like=p256) is not signing.throwaway_key(like=p384)


def test_the_tbs_of_a_certificate_carries_the_serial_the_builder_was_given(issuer: Issuer) -> None:
    backend = SpyBackend(issuer.key)

    signing.sign_certificate(builder=leaf_builder(issuer, serial=0x7E57_5E21), backend=backend)

    ((_purpose, data, _hash),) = backend.calls
    assert asn1_x509.TbsCertificate.load(data)["serial_number"].native == 0x7E57_5E21
