"""The CA service: creating and importing CAs, issuing, revoking, publishing and serving CRLs, exporting."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from django.contrib.auth.models import User
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from ca.errors import AlreadyRevoked, CAError
from ca.models import (
    Certificate,
    CertificateAuthority,
    CrlPublication,
    ReservationState,
    RevocationReason,
    SerialReservation,
)
from ca.pki.keys import CAKeyType
from ca.pki.profiles import SubjectInfo
from ca.pki.serials import format_serial, format_serial_colons
from ca.services import reservations
from ca.services.authorities import create_ca, default_ca, import_ca
from ca.services.crl import clock_floor, crl_lifetime, current_crl, publish_crl
from ca.services.export import export_certificate
from ca.services.issuance import issue_certificate
from ca.services.keys import clear_key_cache, key_path
from ca.services.revocation import find_certificate, revoke_certificate
from tests.conftest import make_csr, need_program, signed_by

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    """The clock stands still at T0 until the test moves it."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def request_der(key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    return make_csr(key, encoding=serialization.Encoding.DER)


def issue(
    ca: CertificateAuthority | None = None,
    *,
    owner: User | None = None,
    now: dt.datetime | None = None,
    validity: dt.timedelta | None = None,
) -> Certificate:
    return issue_certificate(
        request_der=request_der(),
        subject=SubjectInfo(common_name="alice", organization="Enroll Portal"),
        owner=owner,
        ca=ca,
        now=now,
        validity=validity,
    )


def revoke(
    certificate: Certificate,
    reason: RevocationReason = RevocationReason.KEY_COMPROMISE,
    *,
    now: dt.datetime | None = None,
    invalidity_date: dt.datetime | None = None,
) -> None:
    revoke_certificate(certificate=certificate, reason=reason, now=now, invalidity_date=invalidity_date)


def latest_crl(ca: CertificateAuthority) -> CrlPublication:
    return CrlPublication.objects.filter(ca=ca).latest()


def parse_crl(publication: CrlPublication) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(bytes(publication.der))


def crl_serials(publication: CrlPublication) -> set[int]:
    return {entry.serial_number for entry in parse_crl(publication)}


# --- creating CAs ----------------------------------------------------------------------------------


def test_create_ca_makes_a_self_signed_root_with_ca_extensions(frozen: time_machine.Traveller) -> None:
    ca = create_ca(name="Example Root CA", days=100)

    cert = ca.certificate
    assert ca.slug == "example-root-ca"
    assert ca.parent is None
    assert ca.chain() == [ca]
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert constraints.value.path_length is None
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert cert.not_valid_before_utc == T0 - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == T0 + dt.timedelta(days=100)
    assert ca.not_after == cert.not_valid_after_utc
    assert ca.subject == "CN=Example Root CA,O=Enroll Portal"
    assert ca.serial == format_serial(serial=cert.serial_number)


def test_create_ca_publishes_a_first_empty_crl() -> None:
    ca = create_ca(name="Root")

    publication = latest_crl(ca)
    crl = parse_crl(publication)
    assert publication.entries == 0
    assert len(crl) == 0
    assert signed_by(crl, ca.certificate)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == publication.number


def test_create_ca_makes_an_intermediate_under_its_parent() -> None:
    root = create_ca(name="Root", days=1000)

    intermediate = create_ca(name="Issuing CA", parent=root, days=5000)

    cert = intermediate.certificate
    assert intermediate.parent == root
    assert intermediate.chain() == [intermediate, root]
    assert cert.issuer == root.certificate.subject
    cert.verify_directly_issued_by(root.certificate)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert cert.not_valid_after_utc == root.certificate.not_valid_after_utc, "never outlives its parent"
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name == [x509.UniformResourceIdentifier(root.urls.crl_url)]


def test_an_intermediate_needs_its_parents_key(settings: Settings) -> None:
    root = create_ca(name="Root")
    key_path(root).unlink()

    with pytest.raises(CAError, match="cannot be read"):
        create_ca(name="Issuing CA", parent=root)

    assert CertificateAuthority.objects.count() == 1


def test_the_first_ca_becomes_the_default_and_make_default_moves_it() -> None:
    first = create_ca(name="First")
    second = create_ca(name="Second")
    assert first.is_default
    assert not second.is_default
    assert default_ca() == first

    third = create_ca(name="Third", make_default=True)

    assert default_ca() == third
    assert list(CertificateAuthority.objects.filter(is_default=True)) == [third]


def test_no_default_ca_is_a_plain_error() -> None:
    with pytest.raises(CAError, match="init_ca"):
        default_ca()


def test_a_taken_slug_is_refused() -> None:
    create_ca(name="Root", slug="root")

    with pytest.raises(CAError, match="slug 'root'"):
        create_ca(name="Another", slug="root")


def test_a_second_ca_with_the_same_name_gets_its_own_slug() -> None:
    first = create_ca(name="Root")
    second = create_ca(name="Root")

    assert (first.slug, second.slug) == ("root", "root-2")


@pytest.mark.parametrize(
    ("key_type", "check"),
    [
        (
            CAKeyType.EC_P256,
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1",
        ),
        (
            CAKeyType.EC_P384,
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp384r1",
        ),
        (CAKeyType.RSA_3072, lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 3072),
        (CAKeyType.RSA_4096, lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 4096),
    ],
)
def test_the_key_file_is_private_and_encrypted_with_the_settings_passphrase(
    settings: Settings, key_type: CAKeyType, check: Callable[[object], bool]
) -> None:
    ca = create_ca(name=f"CA {key_type}", key_type=key_type)

    path = key_path(ca)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    key = serialization.load_pem_private_key(pem, password=settings.ENROLL_CA_PASSPHRASE.encode())
    assert check(key)
    assert key.public_key() == ca.certificate.public_key()
    assert ca.key_type == key_type.value


def test_a_short_passphrase_is_refused(settings: Settings) -> None:
    settings.ENROLL_CA_PASSPHRASE = "short"

    with pytest.raises(CAError, match="at least 12 characters"):
        create_ca(name="Root")

    assert not CertificateAuthority.objects.exists()


# --- importing CAs made with the openssl CLI ---------------------------------------------------------

CA_CONFIG = """
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
O = Imported Org
CN = {cn}
[ext]
basicConstraints = critical,{basic}
keyUsage = critical,{usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def openssl_ca(
    directory: Path,
    *,
    cn: str = "Imported CA",
    basic: str = "CA:TRUE",
    usage: str = "keyCertSign,cRLSign",
    passphrase: str | None = None,
    issuer: tuple[Path, Path] | None = None,
) -> tuple[Path, Path]:
    """A CA certificate and EC P-256 key made with the openssl CLI: (cert file, key file)."""
    openssl = need_program("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    config, key, cert = directory / "ca.cnf", directory / "ca.key", directory / "ca.crt"
    config.write_text(CA_CONFIG.format(cn=cn, basic=basic, usage=usage))
    run = [
        openssl,
        "req",
        "-config",
        str(config),
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-noenc",
        "-keyout",
        str(key),
    ]
    if issuer is None:
        subprocess.run([*run, "-x509", "-days", "30", "-out", str(cert)], check=True, capture_output=True)
    else:
        csr = directory / "ca.csr"
        subprocess.run([*run, "-out", str(csr)], check=True, capture_output=True)
        subprocess.run(
            [
                openssl,
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(issuer[0]),
                "-CAkey",
                str(issuer[1]),
                "-days",
                "20",
                "-extfile",
                str(config),
                "-extensions",
                "ext",
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    if passphrase is not None:
        encrypted = directory / "ca.enc.key"
        subprocess.run(
            [
                openssl,
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                str(key),
                "-out",
                str(encrypted),
                "-passout",
                "env:CA_PASS",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "CA_PASS": passphrase},
        )
        key = encrypted
    return cert, key


@pytest.mark.real_client
@pytest.mark.parametrize("encrypted", [False, True], ids=["unencrypted-key", "encrypted-key"])
def test_import_ca_takes_over_an_openssl_made_ca(
    tmp_path: Path, settings: Settings, alice: User, encrypted: bool
) -> None:
    cert_file, key_file = openssl_ca(
        tmp_path, passphrase=settings.ENROLL_CA_PASSPHRASE if encrypted else None
    )
    assert (b"ENCRYPTED" in key_file.read_bytes()) is encrypted

    ca = import_ca(
        cert_pem=cert_file.read_bytes(),
        key_pem=key_file.read_bytes(),
        key_passphrase=settings.ENROLL_CA_PASSPHRASE,
    )

    original = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert ca.certificate == original
    assert ca.name == "Imported CA"
    assert ca.slug == "imported-ca"
    assert ca.parent is None
    assert ca.is_default, "the first CA becomes the default"
    assert ca.key_type == "ec-p256"
    stored = key_path(ca).read_bytes()
    assert stored.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key_path(ca).stat().st_mode) == 0o600
    assert signed_by(parse_crl(latest_crl(ca)), original)
    certificate = issue(owner=alice)
    certificate.x509.verify_directly_issued_by(original)


@pytest.mark.real_client
def test_import_ca_finds_the_parent_of_an_imported_intermediate(tmp_path: Path) -> None:
    root_files = openssl_ca(tmp_path / "root", cn="Imported Root")
    root = import_ca(cert_pem=root_files[0].read_bytes(), key_pem=root_files[1].read_bytes())
    inter_files = openssl_ca(tmp_path / "inter", cn="Imported Issuing", issuer=root_files)

    intermediate = import_ca(cert_pem=inter_files[0].read_bytes(), key_pem=inter_files[1].read_bytes())

    assert intermediate.parent == root
    assert intermediate.chain() == [intermediate, root]
    assert not intermediate.is_default


@pytest.mark.real_client
def test_import_ca_skips_a_known_ca_that_only_has_the_issuers_name(
    tmp_path: Path, settings: Settings
) -> None:
    settings.ENROLL_ORGANIZATION = "Imported Org"
    namesake = create_ca(name="Imported Root")  # same subject, another key
    root_files = openssl_ca(tmp_path / "root", cn="Imported Root")
    inter_files = openssl_ca(tmp_path / "inter", cn="Imported Issuing", issuer=root_files)
    assert namesake.certificate.subject == x509.load_pem_x509_certificate(inter_files[0].read_bytes()).issuer

    intermediate = import_ca(cert_pem=inter_files[0].read_bytes(), key_pem=inter_files[1].read_bytes())

    assert intermediate.parent is None, "imported without a parent: its real issuer is not here"


@pytest.mark.real_client
def test_import_ca_refuses_a_certificate_that_is_not_a_ca(tmp_path: Path) -> None:
    cert_file, key_file = openssl_ca(tmp_path, basic="CA:FALSE", usage="digitalSignature")

    with pytest.raises(CAError, match="not a CA certificate"):
        import_ca(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes())

    assert not CertificateAuthority.objects.exists()


@pytest.mark.real_client
def test_import_ca_refuses_a_ca_without_certificate_signing(tmp_path: Path) -> None:
    cert_file, key_file = openssl_ca(tmp_path, usage="digitalSignature")

    with pytest.raises(CAError, match="keyCertSign"):
        import_ca(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes())


@pytest.mark.real_client
def test_import_ca_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    cert_file, _ = openssl_ca(tmp_path / "one")
    _, other_key = openssl_ca(tmp_path / "two")

    with pytest.raises(CAError, match="does not belong"):
        import_ca(cert_pem=cert_file.read_bytes(), key_pem=other_key.read_bytes())

    assert not CertificateAuthority.objects.exists()


@pytest.mark.real_client
def test_import_ca_refuses_an_encrypted_key_with_another_passphrase(
    tmp_path: Path, settings: Settings
) -> None:
    cert_file, key_file = openssl_ca(tmp_path, passphrase="some-other-long-passphrase")

    with pytest.raises(CAError, match="passphrase is wrong"):
        import_ca(
            cert_pem=cert_file.read_bytes(),
            key_pem=key_file.read_bytes(),
            key_passphrase=settings.ENROLL_CA_PASSPHRASE,
        )


@pytest.mark.real_client
def test_import_ca_refuses_an_encrypted_key_without_a_passphrase(tmp_path: Path, settings: Settings) -> None:
    cert_file, key_file = openssl_ca(tmp_path, passphrase=settings.ENROLL_CA_PASSPHRASE)

    with pytest.raises(CAError, match="encrypted"):
        import_ca(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes(), key_passphrase=None)


@pytest.mark.real_client
def test_import_ca_refuses_the_same_ca_twice(tmp_path: Path) -> None:
    cert_file, key_file = openssl_ca(tmp_path)
    import_ca(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes())

    with pytest.raises(CAError, match="imported already"):
        import_ca(cert_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes())


def test_import_ca_refuses_what_is_not_a_certificate() -> None:
    with pytest.raises(CAError, match="not a PEM or DER certificate"):
        import_ca(cert_pem=b"hello", key_pem=b"")


# --- issuing -------------------------------------------------------------------------------------


def test_fifty_certificates_get_unique_positive_serials_of_at_most_20_octets(
    ca: CertificateAuthority,
) -> None:
    certificates = [issue() for _ in range(50)]

    serials = [c.x509.serial_number for c in certificates]
    assert len(set(serials)) == 50
    for certificate, serial in zip(certificates, serials, strict=True):
        assert serial > 0
        assert serial.bit_length() > 64, "at least 64 bits of randomness"
        assert (serial.bit_length() + 8) // 8 <= 20, "DER INTEGER of at most 20 octets"
        assert certificate.serial == format_serial(serial=serial)
        assert certificate.serial_int == serial
    assert Certificate.objects.filter(ca=ca).count() == 50


def test_a_serial_collision_is_an_error_and_nothing_is_signed(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = issue().serial_int
    monkeypatch.setattr(reservations, "new_serial", lambda: taken)

    with pytest.raises(CAError, match="taken already"):
        issue()

    assert Certificate.objects.count() == SerialReservation.objects.count() == 1


def test_a_refused_certificate_discards_its_reservation_with_the_reason(
    ca: CertificateAuthority,
) -> None:
    with pytest.raises(CAError, match="unknown"):
        issue_certificate(
            request_der=request_der(),
            subject=SubjectInfo(common_name="alice"),
            owner=None,
            profile_name="unknown",
        )

    reservation = SerialReservation.objects.get()
    assert reservation.state == ReservationState.DISCARDED
    assert "unknown" in reservation.note.lower()
    assert not Certificate.objects.exists()


def test_validity_is_backdated_and_lasts_the_configured_days(frozen: time_machine.Traveller) -> None:
    create_ca(name="Root", days=3650)

    certificate = issue()

    cert = certificate.x509
    assert cert.not_valid_before_utc == T0 - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == T0 + dt.timedelta(days=365)
    assert (certificate.not_before, certificate.not_after) == (
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )
    assert certificate.created_at == T0


def test_validity_follows_the_setting(frozen: time_machine.Traveller, settings: Settings) -> None:
    settings.ENROLL_CERT_VALIDITY_DAYS = 30
    create_ca(name="Root", days=3650)

    assert issue().x509.not_valid_after_utc == T0 + dt.timedelta(days=30)


def test_a_certificate_never_outlives_its_ca(frozen: time_machine.Traveller) -> None:
    ca = create_ca(name="Short-lived", days=10)

    cert = issue().x509

    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc == T0 + dt.timedelta(days=10)


def test_an_expired_ca_issues_nothing(frozen: time_machine.Traveller) -> None:
    create_ca(name="Short-lived", days=10)
    frozen.shift(dt.timedelta(days=10, seconds=1))

    with pytest.raises(CAError, match="expired"):
        issue()

    assert not Certificate.objects.exists()


# --- revoking and CRLs ---------------------------------------------------------------------------


def test_a_revoked_certificate_is_on_the_next_crl_with_its_reason(
    ca: CertificateAuthority, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    certificate = issue()
    before = latest_crl(ca)
    compromised = dt.datetime.now(tz=dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)

    published_before = CrlPublication.objects.filter(ca=ca).count()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        revoke(certificate, RevocationReason.KEY_COMPROMISE, invalidity_date=compromised)
    assert CrlPublication.objects.filter(ca=ca).count() == published_before, "nothing before the commit"
    for callback in callbacks:
        callback()

    assert CrlPublication.objects.filter(ca=ca).count() == published_before + 1, "one CRL, on commit"
    publication = latest_crl(ca)
    assert publication.number > before.number
    assert publication.entries == 1
    crl = parse_crl(publication)
    assert signed_by(crl, ca.certificate)
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_int)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert (
        entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc == compromised
    )
    assert entry.revocation_date_utc == certificate.revocation.revoked_at.replace(microsecond=0)


def test_an_unspecified_reason_has_no_reason_code(ca: CertificateAuthority) -> None:
    certificate = issue()
    revoke(certificate, RevocationReason.UNSPECIFIED)

    entry = parse_crl(publish_crl(ca=ca)).get_revoked_certificate_by_serial_number(certificate.serial_int)

    assert entry is not None
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_revoking_twice_is_refused(ca: CertificateAuthority) -> None:
    certificate = issue()
    revoke(certificate)

    with pytest.raises(AlreadyRevoked, match="revoked already"):
        revoke(certificate, RevocationReason.SUPERSEDED)

    certificate.refresh_from_db()
    assert certificate.revocation.reason == RevocationReason.KEY_COMPROMISE


def test_an_invalidity_date_in_the_future_is_refused(ca: CertificateAuthority) -> None:
    certificate = issue()

    with pytest.raises(CAError, match="future"):
        revoke(certificate, invalidity_date=dt.datetime.now(tz=dt.UTC) + dt.timedelta(hours=1))

    assert not hasattr(Certificate.objects.get(pk=certificate.pk), "revocation")


def test_crl_numbers_increase_strictly_over_many_publications(frozen: time_machine.Traveller) -> None:
    ca = create_ca(name="Root")
    numbers = [latest_crl(ca).number]
    for step in range(8):
        if step % 2:
            frozen.shift(dt.timedelta(seconds=step))  # same second, later second: both must increase
        numbers.append(publish_crl(ca=ca).number)

    assert all(later > earlier for earlier, later in itertools.pairwise(numbers))
    assert numbers[0] >= clock_floor(T0), "at least the Unix time (ms), so a restored backup keeps increasing"
    assert [
        parse_crl(p).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        for p in CrlPublication.objects.filter(ca=ca).order_by("number")
    ] == numbers


def test_a_burst_of_crls_in_one_second_stays_below_the_clock_a_second_later(
    frozen: time_machine.Traveller,
) -> None:
    """A restore loses the CRL rows since the backup; with no front server registered only the clock keeps the
    next number above the lost ones. Revocations publish a CRL each, often several in one second: the floor
    counts milliseconds, so such a burst does not run ahead of the clock."""
    ca = create_ca(name="Root")
    backup = latest_crl(ca).number
    burst = [publish_crl(ca=ca).number for _ in range(20)]
    lost = CrlPublication.objects.filter(ca=ca, number__gt=backup)
    assert lost.count() == 20
    lost.delete()  # the restored database ends at the backup

    frozen.shift(dt.timedelta(seconds=1))

    assert publish_crl(ca=ca).number > max(burst)


def test_crl_times_follow_the_lifetime_setting(frozen: time_machine.Traveller, settings: Settings) -> None:
    settings.ENROLL_CRL_LIFETIME_HOURS = 24
    ca = create_ca(name="Root")

    publication = latest_crl(ca)

    crl = parse_crl(publication)
    assert crl.last_update_utc == publication.this_update == T0
    assert crl.next_update_utc == publication.next_update == T0 + dt.timedelta(hours=24)


def test_long_expired_certificates_drop_off_the_crl_while_recently_expired_stay(
    frozen: time_machine.Traveller,
) -> None:
    ca = create_ca(name="Root", days=3650)
    lifetime = crl_lifetime()
    short = issue(validity=dt.timedelta(days=1))
    long = issue()
    revoke(short)
    revoke(long)
    expired_at = short.not_after

    recently = publish_crl(ca=ca, now=expired_at + lifetime - dt.timedelta(hours=1))
    long_ago = publish_crl(ca=ca, now=expired_at + lifetime + dt.timedelta(hours=1))

    assert crl_serials(recently) == {short.serial_int, long.serial_int}
    assert recently.entries == 2
    assert crl_serials(long_ago) == {long.serial_int}
    assert long_ago.entries == 1


def test_crl_entries_of_another_ca_are_not_listed(ca: CertificateAuthority) -> None:
    other = create_ca(name="Other")
    mine, theirs = issue(ca), issue(other)
    revoke(mine)
    revoke(theirs)

    assert crl_serials(publish_crl(ca=ca)) == {mine.serial_int}
    assert crl_serials(publish_crl(ca=other)) == {theirs.serial_int}


class TestCurrentCrl:
    """What the public endpoint serves, under a frozen clock."""

    def test_a_fresh_crl_is_reused(self, frozen: time_machine.Traveller) -> None:
        ca = create_ca(name="Root")
        first = latest_crl(ca)
        frozen.shift(crl_lifetime() / 2 - dt.timedelta(seconds=1))

        assert current_crl(ca=ca).pk == first.pk
        assert CrlPublication.objects.filter(ca=ca).count() == 1

    def test_it_is_re_signed_once_half_its_lifetime_has_passed(self, frozen: time_machine.Traveller) -> None:
        ca = create_ca(name="Root")
        first = latest_crl(ca)
        frozen.shift(crl_lifetime() / 2)

        second = current_crl(ca=ca)

        assert second.number > first.number
        assert second.this_update == T0 + crl_lifetime() / 2
        assert second.next_update == second.this_update + crl_lifetime()
        assert current_crl(ca=ca).pk == second.pk, "and the new one is reused"

    def test_a_stale_crl_is_still_served_while_valid_when_the_key_is_unavailable(
        self, frozen: time_machine.Traveller
    ) -> None:
        ca = create_ca(name="Root")
        first = latest_crl(ca)
        key_path(ca).unlink()
        frozen.move_to(first.next_update - dt.timedelta(seconds=1))

        assert current_crl(ca=ca).pk == first.pk

    @pytest.mark.parametrize("past_next_update", [dt.timedelta(0), dt.timedelta(days=30)])
    def test_an_expired_crl_is_never_returned(
        self, frozen: time_machine.Traveller, past_next_update: dt.timedelta
    ) -> None:
        ca = create_ca(name="Root")
        first = latest_crl(ca)
        key_path(ca).unlink()
        frozen.move_to(first.next_update + past_next_update)

        with pytest.raises(CAError, match="cannot be read"):
            current_crl(ca=ca)

    def test_an_expired_crl_is_never_returned_when_the_passphrase_is_wrong(
        self, frozen: time_machine.Traveller, settings: Settings
    ) -> None:
        ca = create_ca(name="Root")
        first = latest_crl(ca)
        clear_key_cache()
        settings.ENROLL_CA_PASSPHRASE = "the-wrong-passphrase-here"
        frozen.move_to(first.next_update + dt.timedelta(hours=1))

        with pytest.raises(CAError, match="passphrase"):
            current_crl(ca=ca)

    def test_an_expired_crl_is_replaced_when_the_key_is_there(self, frozen: time_machine.Traveller) -> None:
        ca = create_ca(name="Root")
        first = latest_crl(ca)
        frozen.move_to(first.next_update + dt.timedelta(days=3))

        current = current_crl(ca=ca)

        assert current.number > first.number
        assert current.next_update > T0 + dt.timedelta(days=3) + crl_lifetime() / 2

    def test_it_is_re_signed_when_a_revocation_is_newer_than_the_crl(
        self, frozen: time_machine.Traveller
    ) -> None:
        ca = create_ca(name="Root")
        certificate = issue()
        first = latest_crl(ca)
        frozen.shift(dt.timedelta(minutes=1))
        # The test transaction never commits, so the on-commit publication does not run: exactly the
        # situation of a revocation whose CRL could not be published at the time.
        revoke(certificate)
        frozen.shift(dt.timedelta(seconds=1))

        current = current_crl(ca=ca)

        assert current.number > first.number
        assert crl_serials(current) == {certificate.serial_int}
        assert current_crl(ca=ca).pk == current.pk, "then reused"

    def test_a_ca_without_any_crl_gets_one(self, frozen: time_machine.Traveller) -> None:
        ca = create_ca(name="Root")
        CrlPublication.objects.all().delete()

        current = current_crl(ca=ca)

        assert current.this_update == T0
        assert signed_by(parse_crl(current), ca.certificate)


# --- exporting and finding -------------------------------------------------------------------------


@pytest.fixture
def intermediate_certificate(db: None) -> tuple[Certificate, CertificateAuthority, CertificateAuthority]:
    root = create_ca(name="Root", make_default=False)
    intermediate = create_ca(name="Issuing", parent=root, make_default=True)
    return issue(), intermediate, root


def test_export_pem_and_der_parse_back(
    intermediate_certificate: tuple[Certificate, CertificateAuthority, CertificateAuthority],
) -> None:
    certificate, _, _ = intermediate_certificate

    pem = export_certificate(certificate=certificate, fmt="pem")
    der = export_certificate(certificate=certificate, fmt="der")

    assert pem.content.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificate(pem.content) == certificate.x509
    assert der.content == bytes(certificate.der)
    assert x509.load_der_x509_certificate(der.content) == certificate.x509
    assert der.content_type == "application/pkix-cert"


def test_export_chain_is_the_leaf_then_its_issuers_up_to_the_root(
    intermediate_certificate: tuple[Certificate, CertificateAuthority, CertificateAuthority],
) -> None:
    certificate, intermediate, root = intermediate_certificate

    export = export_certificate(certificate=certificate, fmt="chain")

    chain = x509.load_pem_x509_certificates(export.content)
    assert chain == [certificate.x509, intermediate.certificate, root.certificate]
    chain[0].verify_directly_issued_by(chain[1])
    chain[1].verify_directly_issued_by(chain[2])


def test_export_pkcs7_holds_the_certificate_and_its_chain(
    intermediate_certificate: tuple[Certificate, CertificateAuthority, CertificateAuthority],
) -> None:
    certificate, intermediate, root = intermediate_certificate

    export = export_certificate(certificate=certificate, fmt="pkcs7")

    assert export.content.startswith(b"-----BEGIN PKCS7-----")
    assert export.content_type == "application/x-pkcs7-certificates"
    certs = pkcs7.load_pem_pkcs7_certificates(export.content)
    assert set(certs) == {certificate.x509, intermediate.certificate, root.certificate}
    assert len(certs) == 3


def test_export_refuses_an_unknown_format(ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="pem, der, chain, pkcs7"):
        export_certificate(certificate=issue(), fmt="pfx")


@pytest.mark.parametrize(
    "spelling", [str.upper, str.lower, lambda s: format_serial_colons(serial=int(s, 16)).lower()]
)
def test_find_certificate_reads_hex_in_any_case_with_or_without_colons(
    ca: CertificateAuthority, spelling: Callable[[str], str]
) -> None:
    certificate = issue()

    assert find_certificate(serial=spelling(certificate.serial)) == certificate


@pytest.mark.parametrize(("text", "message"), [("00FF", "No certificate"), ("xyz", "not a serial number")])
def test_find_certificate_explains_what_it_did_not_find(
    ca: CertificateAuthority, text: str, message: str
) -> None:
    issue()

    with pytest.raises(CAError, match=message):
        find_certificate(serial=text)
