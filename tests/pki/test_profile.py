"""Certificate profiles: ca.pki.profiles with CAs made in the test (no database)."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID, NameOID

from ca.pki.keys import CAPrivateKey
from ca.pki.profiles import (
    DEFAULT_BACKDATE,
    IssuerUrls,
    ProfileError,
    SubjectInfo,
    build_ca_certificate,
    build_ca_name,
    build_client_certificate,
    build_subject,
    get_profile,
    validity_window,
)
from ca.pki.signing import PrivateKeyBackend
from tests.conftest import need_program

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
URLS = IssuerUrls(
    crl_url="http://192.0.2.10/ca/test-root/crl.der", ca_issuers_url="http://192.0.2.10/ca/test-root.der"
)

CLIENT_EXTENSIONS = {
    ExtensionOID.BASIC_CONSTRAINTS: True,
    ExtensionOID.KEY_USAGE: True,
    ExtensionOID.EXTENDED_KEY_USAGE: False,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: False,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: False,
    ExtensionOID.CRL_DISTRIBUTION_POINTS: False,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS: False,
}


@dataclass(frozen=True)
class IssuingCA:
    certificate: x509.Certificate
    key: CAPrivateKey


def make_ca(
    *,
    key: CAPrivateKey | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    not_after: dt.datetime = NOW + dt.timedelta(days=3650),
) -> IssuingCA:
    """A root CA built with plain `cryptography`, independent of the code under test."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Profile Test Root CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuingCA(certificate=certificate, key=key)


@pytest.fixture(scope="module")
def root() -> IssuingCA:
    return make_ca()


def issue(
    ca: IssuingCA,
    *,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None = None,
    subject: SubjectInfo | None = None,
    urls: IssuerUrls = URLS,
    serial: int = 0x4F1A2B3C4D5E6F7081,
) -> x509.Certificate:
    not_before, not_after = validity_window(now=NOW, validity=dt.timedelta(days=365), issuer=ca.certificate)
    return build_client_certificate(
        profile=get_profile(name="client"),
        public_key=public_key or ec.generate_private_key(ec.SECP256R1()).public_key(),
        subject=subject
        or SubjectInfo(common_name="alice", organization="Enroll Portal", email="alice@example.com"),
        issuer=ca.certificate,
        backend=PrivateKeyBackend(key=ca.key),
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        urls=urls,
    )


def criticality(certificate: x509.Certificate) -> dict[x509.ObjectIdentifier, bool]:
    return {extension.oid: extension.critical for extension in certificate.extensions}


def ski_of(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


# --- the client profile --------------------------------------------------------------------------------


def test_a_client_certificate_has_exactly_the_profiles_extensions(root: IssuingCA) -> None:
    certificate = issue(root, subject=SubjectInfo(common_name="alice", organization="Enroll Portal"))

    assert criticality(certificate) == CLIENT_EXTENSIONS
    assert certificate.version is x509.Version.v3


def test_it_adds_the_email_as_the_only_rfc822_subject_alternative_name(root: IssuingCA) -> None:
    certificate = issue(root, subject=SubjectInfo(common_name="alice", email="alice@example.com"))

    assert criticality(certificate) == {**CLIENT_EXTENSIONS, ExtensionOID.SUBJECT_ALTERNATIVE_NAME: False}
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.RFC822Name("alice@example.com")]


def test_it_adds_no_subject_alternative_name_without_an_email(root: IssuingCA) -> None:
    certificate = issue(root, subject=SubjectInfo(common_name="alice", email=None))

    assert ExtensionOID.SUBJECT_ALTERNATIVE_NAME not in criticality(certificate)


def test_its_basic_constraints_say_not_a_ca(root: IssuingCA) -> None:
    constraints = issue(root).extensions.get_extension_for_class(x509.BasicConstraints)

    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=False, path_length=None)


def test_its_key_usage_is_digital_signature_only(root: IssuingCA) -> None:
    usage = issue(root).extensions.get_extension_for_class(x509.KeyUsage)

    assert usage.critical
    assert usage.value.digital_signature
    assert not any(
        [
            usage.value.content_commitment,
            usage.value.key_encipherment,
            usage.value.data_encipherment,
            usage.value.key_agreement,
            usage.value.key_cert_sign,
            usage.value.crl_sign,
        ]
    )


def test_its_extended_key_usage_is_client_auth_only(root: IssuingCA) -> None:
    usage = issue(root).extensions.get_extension_for_class(x509.ExtendedKeyUsage)

    assert not usage.critical
    assert list(usage.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_its_key_identifiers_are_its_own_and_its_issuers(root: IssuingCA) -> None:
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    certificate = issue(root, public_key=public_key)

    assert ski_of(certificate) == x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski_of(root.certificate)
    assert aki.authority_cert_issuer is None
    assert aki.authority_cert_serial_number is None


def test_it_points_at_the_issuers_crl_and_certificate(root: IssuingCA) -> None:
    certificate = issue(root)

    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [point.full_name for point in points] == [[x509.UniformResourceIdentifier(URLS.crl_url)]]
    assert all(point.reasons is None and point.crl_issuer is None for point in points)
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(item.access_method, item.access_location) for item in access] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(URLS.ca_issuers_url))
    ]


def test_it_adds_ocsp_to_the_authority_information_access_when_configured(root: IssuingCA) -> None:
    urls = IssuerUrls(
        crl_url=URLS.crl_url, ca_issuers_url=URLS.ca_issuers_url, ocsp_url="http://192.0.2.10/ocsp"
    )

    access = issue(root, urls=urls).extensions.get_extension_for_class(x509.AuthorityInformationAccess).value

    assert {item.access_method for item in access} == {
        AuthorityInformationAccessOID.OCSP,
        AuthorityInformationAccessOID.CA_ISSUERS,
    }


def test_it_is_signed_by_the_issuer_and_names_it(root: IssuingCA) -> None:
    certificate = issue(root, serial=0x0123456789ABCDEF01)

    certificate.verify_directly_issued_by(root.certificate)
    assert certificate.issuer == root.certificate.subject
    assert certificate.serial_number == 0x0123456789ABCDEF01
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)


@pytest.mark.parametrize(
    ("make_key", "hash_name"),
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), "sha384", id="P-384-CA"),
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072), "sha256", id="RSA-3072-CA"
        ),
    ],
)
def test_it_signs_with_the_hash_that_fits_the_ca_key(
    make_key: Callable[[], CAPrivateKey], hash_name: str
) -> None:
    ca = make_ca(key=make_key())

    certificate = issue(ca)

    certificate.verify_directly_issued_by(ca.certificate)
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == hash_name


@pytest.mark.parametrize(
    "public_key",
    [
        pytest.param(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(), id="RSA-2048"
        ),
        pytest.param(ec.generate_private_key(ec.SECP384R1()).public_key(), id="P-384"),
    ],
)
def test_it_certifies_rsa_and_ecdsa_keys(
    root: IssuingCA, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
) -> None:
    certificate = issue(root, public_key=public_key)

    assert certificate.public_key() == public_key
    assert criticality(certificate) == {**CLIENT_EXTENSIONS, ExtensionOID.SUBJECT_ALTERNATIVE_NAME: False}


def test_a_hostile_requests_key_still_gets_exactly_the_profiles_extensions(root: IssuingCA) -> None:
    evil = x509.load_pem_x509_csr((FIXTURES / "openssl-ec-p256-evil-ext.csr.pem").read_bytes())
    assert evil.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value.ca  # the request asks for CA:TRUE
    public_key = evil.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)

    certificate = issue(root, public_key=public_key, subject=SubjectInfo(common_name="mallory"))

    assert criticality(certificate) == CLIENT_EXTENSIONS
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert certificate.subject.rfc4514_string() == "CN=mallory"
    assert "Evil Corp" not in certificate.subject.rfc4514_string()


# --- subject -------------------------------------------------------------------------------------------


def test_the_subject_is_built_from_the_account(root: IssuingCA) -> None:
    certificate = issue(root, subject=SubjectInfo(common_name="alice", organization="Enroll Portal"))

    assert certificate.subject.rfc4514_string() == "CN=alice,O=Enroll Portal"
    assert [attribute.oid for attribute in certificate.subject] == [
        NameOID.ORGANIZATION_NAME,
        NameOID.COMMON_NAME,
    ]


def test_the_subject_has_no_organization_when_none_is_configured() -> None:
    subject = build_subject(info=SubjectInfo(common_name="bob", organization=None))

    assert subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob")])


def test_the_subject_never_carries_the_email() -> None:
    subject = build_subject(info=SubjectInfo(common_name="alice", email="alice@example.com"))

    assert subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS) == []


def test_the_subject_accepts_a_common_name_of_64_characters() -> None:
    subject = build_subject(info=SubjectInfo(common_name="a" * 64))

    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a" * 64


@pytest.mark.parametrize(
    ("info", "keyword"),
    [
        pytest.param(SubjectInfo(common_name="a" * 65), "1 to 64 characters", id="common-name-of-65"),
        pytest.param(SubjectInfo(common_name="x" * 500), "1 to 64 characters", id="common-name-of-500"),
        pytest.param(SubjectInfo(common_name=""), "user name", id="empty-common-name"),
        pytest.param(
            SubjectInfo(common_name="alice", organization="O" * 65), "organization", id="organization-of-65"
        ),
    ],
)
def test_it_refuses_a_subject_it_cannot_encode(info: SubjectInfo, keyword: str) -> None:
    with pytest.raises(ProfileError) as caught:
        build_subject(info=info)

    assert keyword in str(caught.value)
    assert len(str(caught.value)) < 200  # quotes at most 80 characters of the value


def test_it_refuses_to_issue_with_a_common_name_over_64_characters(root: IssuingCA) -> None:
    with pytest.raises(ProfileError, match="64 characters"):
        issue(root, subject=SubjectInfo(common_name="a" * 65))


# --- profiles ------------------------------------------------------------------------------------------


def test_the_client_profile_lasts_a_year_by_default() -> None:
    profile = get_profile(name="client")

    assert profile.name == "client"
    assert profile.default_validity == dt.timedelta(days=365)
    assert profile.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH,)


@pytest.mark.parametrize("name", ["server", "", "CLIENT", "client "])
def test_it_refuses_an_unknown_profile(name: str) -> None:
    with pytest.raises(ProfileError, match="no certificate profile named"):
        get_profile(name=name)


# --- validity ------------------------------------------------------------------------------------------


def test_validity_starts_five_minutes_ago_and_lasts_as_configured(root: IssuingCA) -> None:
    not_before, not_after = validity_window(now=NOW, validity=dt.timedelta(days=365), issuer=root.certificate)

    assert dt.timedelta(minutes=5) == DEFAULT_BACKDATE
    assert not_before == NOW - dt.timedelta(minutes=5)
    assert not_after == NOW + dt.timedelta(days=365)


def test_validity_is_written_into_the_certificate(root: IssuingCA) -> None:
    certificate = issue(root)

    assert certificate.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert certificate.not_valid_after_utc == NOW + dt.timedelta(days=365)


def test_validity_drops_microseconds_without_passing_the_limits(root: IssuingCA) -> None:
    now = NOW.replace(microsecond=999_999)

    not_before, not_after = validity_window(now=now, validity=dt.timedelta(days=30), issuer=root.certificate)

    assert not_before == NOW - dt.timedelta(minutes=5)
    assert not_after == NOW + dt.timedelta(days=30)
    assert not_after <= now + dt.timedelta(days=30)


def test_validity_honours_a_custom_backdate(root: IssuingCA) -> None:
    not_before, _ = validity_window(
        now=NOW, validity=dt.timedelta(days=1), issuer=root.certificate, backdate=dt.timedelta(minutes=1)
    )

    assert not_before == NOW - dt.timedelta(minutes=1)


def test_validity_never_passes_the_issuers_not_after() -> None:
    issuer_end = NOW + dt.timedelta(days=100)
    ca = make_ca(not_after=issuer_end)

    not_before, not_after = validity_window(now=NOW, validity=dt.timedelta(days=365), issuer=ca.certificate)

    assert not_before == NOW - dt.timedelta(minutes=5)
    assert not_after == issuer_end
    assert issue(ca).not_valid_after_utc == ca.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    "issuer_end",
    [NOW - dt.timedelta(days=1), NOW - dt.timedelta(seconds=1), NOW],
    ids=["a-day-ago", "a-second-ago", "right-now"],
)
def test_it_refuses_a_validity_when_the_issuer_has_expired(issuer_end: dt.datetime) -> None:
    ca = make_ca(not_before=NOW - dt.timedelta(days=400), not_after=issuer_end)

    with pytest.raises(ProfileError, match="CA certificate has expired"):
        validity_window(now=NOW, validity=dt.timedelta(days=365), issuer=ca.certificate)


def test_it_wants_an_aware_now(root: IssuingCA) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validity_window(now=NOW.replace(tzinfo=None), validity=dt.timedelta(days=1), issuer=root.certificate)


# --- CA certificates -----------------------------------------------------------------------------------


def make_root_certificate(key: CAPrivateKey) -> x509.Certificate:
    return build_ca_certificate(
        subject=build_ca_name(common_name="Enroll Root CA", organization="Enroll Portal"),
        key=key,
        serial=0x7A11,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=3650),
    )


def test_a_root_ca_certificate_is_a_self_signed_ca_without_path_length() -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    certificate = make_root_certificate(key)

    assert criticality(certificate) == {
        ExtensionOID.BASIC_CONSTRAINTS: True,
        ExtensionOID.KEY_USAGE: True,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER: False,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER: False,
    }
    assert certificate.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value == x509.BasicConstraints(ca=True, path_length=None)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert not usage.key_encipherment
    assert ski_of(certificate) == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski_of(certificate)
    assert certificate.issuer == certificate.subject
    assert certificate.subject.rfc4514_string() == "CN=Enroll Root CA,O=Enroll Portal"
    certificate.verify_directly_issued_by(certificate)
    assert (certificate.not_valid_before_utc, certificate.not_valid_after_utc) == (
        NOW,
        NOW + dt.timedelta(days=3650),
    )
    assert certificate.serial_number == 0x7A11


def test_an_intermediate_ca_certificate_has_path_length_zero_and_is_signed_by_its_parent() -> None:
    parent_key = ec.generate_private_key(ec.SECP384R1())
    parent = make_root_certificate(parent_key)
    key = ec.generate_private_key(ec.SECP256R1())

    certificate = build_ca_certificate(
        subject=build_ca_name(common_name="Enroll Issuing CA", organization=None),
        key=key,
        serial=0x1A7E,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=1825),
        issuer=parent,
        issuer_key=parent_key,
        issuer_urls=URLS,
    )

    certificate.verify_directly_issued_by(parent)
    assert certificate.issuer == parent.subject
    assert criticality(certificate) == {
        ExtensionOID.BASIC_CONSTRAINTS: True,
        ExtensionOID.KEY_USAGE: True,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER: False,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER: False,
        ExtensionOID.CRL_DISTRIBUTION_POINTS: False,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS: False,
    }
    assert certificate.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value == x509.BasicConstraints(ca=True, path_length=0)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True, False)
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski_of(parent)
    assert ski_of(certificate) == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert certificate.public_key() == key.public_key()
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == "sha384"  # the P-384 parent signs with SHA-384


def test_a_client_certificate_from_an_intermediate_chains_to_the_root() -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_certificate = make_root_certificate(root_key)
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = build_ca_certificate(
        subject=build_ca_name(common_name="Enroll Issuing CA", organization=None),
        key=key,
        serial=0x1A7E,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1825),
        issuer=root_certificate,
        issuer_key=root_key,
        issuer_urls=URLS,
    )

    certificate = issue(IssuingCA(certificate=intermediate, key=key))

    certificate.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root_certificate)


@pytest.mark.parametrize(
    ("with_key", "with_urls"),
    [(False, True), (True, False), (False, False)],
    ids=["no-key", "no-urls", "neither"],
)
def test_an_intermediate_needs_its_issuers_key_and_urls(with_key: bool, with_urls: bool) -> None:
    parent_key = ec.generate_private_key(ec.SECP256R1())
    parent = make_root_certificate(parent_key)

    with pytest.raises(ValueError, match="issuer's key and URLs"):
        build_ca_certificate(
            subject=build_ca_name(common_name="Enroll Issuing CA", organization=None),
            key=ec.generate_private_key(ec.SECP256R1()),
            serial=0x1A7E,
            not_before=NOW,
            not_after=NOW + dt.timedelta(days=1825),
            issuer=parent,
            issuer_key=parent_key if with_key else None,
            issuer_urls=URLS if with_urls else None,
        )


# --- pkilint -------------------------------------------------------------------------------------------


def pkilint_findings(lint: str, certificate: x509.Certificate, tmp_path: Path) -> str:
    path = tmp_path / f"{certificate.serial_number:x}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        [lint, "lint", "-s", "WARNING", str(path)], capture_output=True, text=True, check=False
    )
    findings = (result.stdout + result.stderr).strip()
    return findings if findings or result.returncode == 0 else f"exit status {result.returncode}"


@pytest.mark.real_client
def test_every_certificate_it_builds_passes_pkilint_without_warnings(tmp_path: Path) -> None:
    lint = need_program("lint_pkix_cert")
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_certificate = make_root_certificate(root_key)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    intermediate = build_ca_certificate(
        subject=build_ca_name(common_name="Enroll Issuing CA", organization="Enroll Portal"),
        key=key,
        serial=0x1A7E,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1825),
        issuer=root_certificate,
        issuer_key=root_key,
        issuer_urls=URLS,
    )
    issuing = IssuingCA(certificate=intermediate, key=key)
    certificates = [
        root_certificate,
        intermediate,
        issue(issuing, serial=0x11),
        issue(issuing, subject=SubjectInfo(common_name="bob"), serial=0x12),
        issue(
            issuing,
            public_key=rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
            urls=IssuerUrls(URLS.crl_url, URLS.ca_issuers_url, ocsp_url="http://192.0.2.10/ocsp"),
            serial=0x13,
        ),
    ]

    for certificate in certificates:
        assert pkilint_findings(lint, certificate, tmp_path) == "", certificate.subject.rfc4514_string()
