"""Certificate revocation lists: ca.pki.crl.build_crl (RFC 5280 section 5), with a CA made in the test."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID, NameOID

from ca.pki.crl import CrlEntry, build_crl, revoked_certificate
from ca.pki.keys import CAPrivateKey
from ca.pki.signing import PrivateKeyBackend
from tests.conftest import need_program

THIS_UPDATE = dt.datetime(2025, 3, 14, 12, 0, 0, tzinfo=dt.UTC)
NEXT_UPDATE = THIS_UPDATE + dt.timedelta(days=7)


def make_issuer(key: CAPrivateKey) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Enroll Portal"),
            x509.NameAttribute(NameOID.COMMON_NAME, "CRL Test CA"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(THIS_UPDATE - dt.timedelta(days=30))
        .not_valid_after(THIS_UPDATE + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def issuer_key() -> CAPrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def issuer(issuer_key: CAPrivateKey) -> x509.Certificate:
    return make_issuer(issuer_key)


BuildCrl = Callable[..., x509.CertificateRevocationList]


@pytest.fixture
def build(issuer: x509.Certificate, issuer_key: CAPrivateKey) -> BuildCrl:
    def build(
        entries: Iterable[CrlEntry] = (),
        *,
        number: int = 1,
        this_update: dt.datetime = THIS_UPDATE,
        next_update: dt.datetime = NEXT_UPDATE,
    ) -> x509.CertificateRevocationList:
        return build_crl(
            issuer=issuer,
            backend=PrivateKeyBackend(key=issuer_key),
            number=number,
            this_update=this_update,
            next_update=next_update,
            entries=entries,
        )

    return build


def entry_for(crl: x509.CertificateRevocationList, serial: int) -> x509.RevokedCertificate:
    revoked = crl.get_revoked_certificate_by_serial_number(serial)
    assert revoked is not None, f"{serial:X} is not on the CRL"
    return revoked


ENTRIES = [
    CrlEntry(serial=0x1001, revoked_at=THIS_UPDATE - dt.timedelta(days=3)),
    CrlEntry(
        serial=0x1002, revoked_at=THIS_UPDATE - dt.timedelta(days=2), reason=x509.ReasonFlags.unspecified
    ),
    CrlEntry(
        serial=0x1003,
        revoked_at=THIS_UPDATE - dt.timedelta(days=1),
        reason=x509.ReasonFlags.key_compromise,
        invalidity_date=THIS_UPDATE - dt.timedelta(days=10),
    ),
    CrlEntry(
        serial=0x1004, revoked_at=THIS_UPDATE - dt.timedelta(hours=1), reason=x509.ReasonFlags.superseded
    ),
]


# --- the list ------------------------------------------------------------------------------------------


def test_it_builds_a_version_2_crl(build: BuildCrl) -> None:
    der = build(ENTRIES).public_bytes(serialization.Encoding.DER)

    assert asn1_crl.CertificateList.load(der)["tbs_cert_list"]["version"].native == "v2"


def test_it_is_signed_by_the_issuer(build: BuildCrl, issuer: x509.Certificate) -> None:
    crl = build(ENTRIES)

    assert crl.issuer == issuer.subject
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public_key)


def test_a_crl_signed_by_another_key_does_not_verify(build: BuildCrl) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()

    assert not build(ENTRIES).is_signature_valid(other)


def test_it_carries_the_authority_key_identifier_of_the_issuer(
    build: BuildCrl, issuer: x509.Certificate
) -> None:
    crl = build()

    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert not aki.critical
    assert aki.value.key_identifier == ski.digest


@pytest.mark.parametrize("number", [0, 1, 42, (1 << 159) - 1])
def test_it_carries_the_crl_number(build: BuildCrl, number: int) -> None:
    extension = build(number=number).extensions.get_extension_for_class(x509.CRLNumber)

    assert not extension.critical
    assert extension.value.crl_number == number


def test_it_has_only_the_aki_and_crl_number_extensions(build: BuildCrl) -> None:
    extensions = {extension.oid: extension.critical for extension in build(ENTRIES).extensions}

    assert extensions == {ExtensionOID.AUTHORITY_KEY_IDENTIFIER: False, ExtensionOID.CRL_NUMBER: False}


def test_it_carries_this_update_and_next_update(build: BuildCrl) -> None:
    crl = build(this_update=THIS_UPDATE, next_update=THIS_UPDATE + dt.timedelta(hours=36))

    assert crl.last_update_utc == THIS_UPDATE
    assert crl.next_update_utc == THIS_UPDATE + dt.timedelta(hours=36)


def test_it_signs_with_sha384_for_a_p384_issuer() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    issuer = make_issuer(key)

    crl = build_crl(
        issuer=issuer,
        backend=PrivateKeyBackend(key=key),
        number=1,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=[],
    )

    assert isinstance(crl.signature_hash_algorithm, hashes.SHA384)
    assert crl.is_signature_valid(key.public_key())


def test_it_signs_with_an_rsa_issuer() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    issuer = make_issuer(key)

    crl = build_crl(
        issuer=issuer,
        backend=PrivateKeyBackend(key=key),
        number=7,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=ENTRIES,
    )

    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert crl.is_signature_valid(key.public_key())
    assert len(crl) == len(ENTRIES)


# --- entries -------------------------------------------------------------------------------------------


def test_an_empty_crl_has_no_entries(build: BuildCrl) -> None:
    crl = build([])

    assert len(crl) == 0
    assert list(crl) == []


def test_it_lists_every_entry_with_its_revocation_date(build: BuildCrl) -> None:
    crl = build(ENTRIES)

    assert sorted(revoked.serial_number for revoked in crl) == [0x1001, 0x1002, 0x1003, 0x1004]
    for entry in ENTRIES:
        assert entry_for(crl, entry.serial).revocation_date_utc == entry.revoked_at


def test_it_takes_the_entries_from_any_iterable(build: BuildCrl) -> None:
    crl = build(iter(ENTRIES))

    assert len(crl) == len(ENTRIES)


@pytest.mark.parametrize("reason", [None, x509.ReasonFlags.unspecified], ids=["no-reason", "unspecified"])
def test_an_unspecified_reason_gives_no_reason_code(build: BuildCrl, reason: x509.ReasonFlags | None) -> None:
    crl = build([CrlEntry(serial=0x2001, revoked_at=THIS_UPDATE, reason=reason)])

    assert len(entry_for(crl, 0x2001).extensions) == 0


@pytest.mark.parametrize(
    "reason",
    [
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.certificate_hold,
        x509.ReasonFlags.privilege_withdrawn,
    ],
    ids=lambda reason: reason.name,
)
def test_a_known_reason_gives_a_non_critical_reason_code(build: BuildCrl, reason: x509.ReasonFlags) -> None:
    crl = build([CrlEntry(serial=0x2002, revoked_at=THIS_UPDATE, reason=reason)])

    extension = entry_for(crl, 0x2002).extensions.get_extension_for_class(x509.CRLReason)
    assert not extension.critical
    assert extension.value.reason is reason


def test_it_adds_the_invalidity_date_where_known(build: BuildCrl) -> None:
    crl = build(ENTRIES)

    compromised = entry_for(crl, 0x1003)
    invalidity = compromised.extensions.get_extension_for_class(x509.InvalidityDate)
    assert not invalidity.critical
    assert invalidity.value.invalidity_date_utc == THIS_UPDATE - dt.timedelta(days=10)
    assert {extension.oid for extension in compromised.extensions} == {
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
    }
    assert all(
        CRLEntryExtensionOID.INVALIDITY_DATE
        not in {extension.oid for extension in entry_for(crl, serial).extensions}
        for serial in (0x1001, 0x1002, 0x1004)
    )


def test_an_entry_can_carry_an_invalidity_date_without_a_reason() -> None:
    revoked = revoked_certificate(
        entry=CrlEntry(
            serial=0x3001, revoked_at=THIS_UPDATE, invalidity_date=THIS_UPDATE - dt.timedelta(hours=5)
        )
    )

    assert [extension.oid for extension in revoked.extensions] == [CRLEntryExtensionOID.INVALIDITY_DATE]


def test_it_keeps_a_large_serial_exactly(build: BuildCrl) -> None:
    serial = (1 << 158) + 0xABCDEF

    crl = build([CrlEntry(serial=serial, revoked_at=THIS_UPDATE)])

    assert entry_for(crl, serial).serial_number == serial


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "next_update",
    [THIS_UPDATE, THIS_UPDATE - dt.timedelta(seconds=1), THIS_UPDATE - dt.timedelta(days=7)],
    ids=["equal", "a-second-before", "a-week-before"],
)
def test_it_refuses_a_next_update_not_after_this_update(build: BuildCrl, next_update: dt.datetime) -> None:
    with pytest.raises(ValueError, match="nextUpdate must be later than thisUpdate"):
        build(next_update=next_update)


@pytest.mark.parametrize(
    "number", [-1, -(1 << 64), 1 << 159], ids=["minus-one", "very-negative", "over-20-octets"]
)
def test_it_refuses_a_crl_number_out_of_range(build: BuildCrl, number: int) -> None:
    with pytest.raises(ValueError, match="non-negative integer of at most 20 octets"):
        build(number=number)


# --- pkilint -------------------------------------------------------------------------------------------


@pytest.mark.real_client
@pytest.mark.parametrize("entries", [[], ENTRIES], ids=["empty", "with-entries"])
def test_it_passes_pkilint_without_warnings(build: BuildCrl, entries: list[CrlEntry], tmp_path: Path) -> None:
    lint = need_program("lint_crl")
    path = tmp_path / "crl.der"
    path.write_bytes(build(entries, number=3).public_bytes(serialization.Encoding.DER))

    result = subprocess.run(
        [lint, "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (result.stdout + result.stderr).strip() == ""
    assert result.returncode == 0
