"""Lint before signing: every certificate is drafted with a throwaway key and linted (pkilint, RFC 5280)
before the CA key signs it, and stored only when clean (a refusal costs no CA signature and no serial);
ENROLL_LINT_BEFORE_SIGN turns it off; a public URL linters refuse is named at startup."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.core import checks
from pytest_django.fixtures import Settings

from ca.checks import check_public_url
from ca.models import (
    AuditEntry,
    AuditEvent,
    Certificate,
    CertificateAuthority,
    ReservationState,
    SerialReservation,
)
from ca.pki import lint, profiles
from ca.pki.lint import Severity
from ca.pki.profiles import PROFILES, Profile
from ca.pki.serials import format_serial, new_serial
from ca.services import reservations
from ca.services.crl import publish_crl
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.ca.backends import install_spy
from tests.conftest import make_csr

ROOT = Path(__file__).resolve().parents[2]


def findings_of(certificate: Certificate, *, worst: Severity = Severity.WARNING) -> list[str]:
    return [str(f) for f in lint.lint_certificate(der=bytes(certificate.der)) if f.severity <= worst]


# --- issued certificates lint clean ------------------------------------------------------------------


@pytest.mark.parametrize(
    "public_url",
    ["http://pki.example.test", "http://127.0.0.1:8000", "https://portal.example.org/pki-portal"],
    ids=["test-settings", "make-run-default", "sub-path"],
)
@pytest.mark.parametrize("ocsp", [True, False], ids=["ocsp", "no-ocsp"])
def test_issued_certificates_have_no_warning_error_or_fatal_finding(
    ca: CertificateAuthority, alice: User, settings: Settings, public_url: str, ocsp: bool
) -> None:
    settings.ENROLL_PUBLIC_URL = public_url
    settings.ENROLL_OCSP_IN_AIA = ocsp
    request = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk)

    assert request.certificate is not None, request.reason
    assert findings_of(request.certificate) == []


def test_the_validators_are_built_once_per_process() -> None:
    assert lint._validator() is lint._validator()


def test_the_warm_up_certificate_lints_clean() -> None:
    # Clean: the warm-up runs through every validator a real certificate meets, none stops it early.
    found = lint.lint_certificate(der=lint._sample_der())

    assert [str(f) for f in found if f.severity <= Severity.NOTICE] == []


WSGI_PROBE = (
    "import sys; import enroll.wsgi; from django.conf import settings; from django.db import connection; "
    "from ca.pki import lint; "
    "print(lint._validator.cache_info().currsize, 'pkilint.pkix' in sys.modules, "
    "settings.ROOT_URLCONF in sys.modules, connection.connection is None)"
)


@pytest.mark.parametrize(
    ("lint_on", "expected"), [("true", "1 True True True"), ("false", "0 False True True")], ids=["on", "off"]
)
def test_loading_the_wsgi_application_prepares_urls_and_lint_without_touching_the_database(
    lint_on: str, expected: str
) -> None:
    # What gunicorn --preload does in its master before forking: nothing there may open a connection.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "ENROLL_LINT_BEFORE_SIGN": lint_on}
    result = subprocess.run(
        [sys.executable, "-c", WSGI_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == expected


def test_der_that_is_no_certificate_is_one_fatal_finding() -> None:
    (finding,) = lint.lint_certificate(der=b"\x30\x03\x02\x01\x00")

    assert finding.severity == Severity.FATAL
    assert finding.blocking


# --- broken certificates are refused --------------------------------------------------------------------


@pytest.fixture
def broken_profile(monkeypatch: pytest.MonkeyPatch) -> str:
    """A test-only profile with an empty extendedKeyUsage (RFC 5280 4.2.1.12: SIZE (1..MAX))."""
    allow_empty_eku(monkeypatch)
    monkeypatch.setitem(PROFILES, "broken", Profile("broken", (), dt.timedelta(days=30)))
    return "broken"


def allow_empty_eku(monkeypatch: pytest.MonkeyPatch) -> None:
    """cryptography 51 refuses an empty ExtendedKeyUsage when it is constructed; older releases encoded it
    (an empty SEQUENCE). Lint must catch such a certificate whichever library built it, so the test lets
    the constructor take an empty list again: the encoder then writes what a lenient builder would."""

    def lenient_init(self: x509.ExtendedKeyUsage, usages: Any) -> None:
        self._usages = list(usages)

    monkeypatch.setattr(x509.ExtendedKeyUsage, "__init__", lenient_init)


def critical_aki(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> str:
    """The builder marks the authorityKeyIdentifier critical (RFC 5280 4.2.1.1: MUST be non-critical)."""
    add_extension = x509.CertificateBuilder.add_extension

    def add(
        self: x509.CertificateBuilder, extval: x509.ExtensionType, critical: bool
    ) -> x509.CertificateBuilder:
        return add_extension(self, extval, critical or isinstance(extval, x509.AuthorityKeyIdentifier))

    monkeypatch.setattr(x509.CertificateBuilder, "add_extension", add)
    return "pkix.authority_key_identifier_critical"


def empty_eku(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> str:
    allow_empty_eku(monkeypatch)
    monkeypatch.setitem(profiles.PROFILES, "client", Profile("client", (), dt.timedelta(days=30)))
    return "itu.invalid_asn1_syntax"


def single_label_url(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> str:
    settings.ENROLL_PUBLIC_URL = "http://localhost:8000"
    return "pkix.invalid_uri_syntax"


BREAKAGES = [
    pytest.param(critical_aki, id="critical-aki"),
    pytest.param(empty_eku, id="empty-eku"),
    pytest.param(single_label_url, id="localhost-url"),
]


def approve_one(request: EnrollmentRequest) -> EnrollmentRequest:
    return flows.approve(request_id=request.pk)


def approve_in_bulk(request: EnrollmentRequest) -> EnrollmentRequest:
    (result,) = flows.approve_many(request_ids=[request.pk], actor=ca_admin())
    assert result.request is not None
    return result.request


APPROVALS = [pytest.param(approve_one, id="approve"), pytest.param(approve_in_bulk, id="approve_many")]


@pytest.fixture
def drawn_serials(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every serial drawn, in order."""
    drawn: list[int] = []

    def draw() -> int:
        drawn.append(new_serial())
        return drawn[-1]

    monkeypatch.setattr(reservations, "new_serial", draw)
    return drawn


@pytest.mark.parametrize("approve", APPROVALS)
@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_certificate_with_an_rfc5280_error_is_not_issued_and_the_reason_names_the_finding(
    ca: CertificateAuthority,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    drawn_serials: list[int],
    breakage: Callable[[pytest.MonkeyPatch, Settings], str],
    approve: Callable[[EnrollmentRequest], EnrollmentRequest],
) -> None:
    code = breakage(monkeypatch, settings)
    request = flows.submit_csr(owner=alice, data=make_csr())

    decided = approve(request)

    request.refresh_from_db()
    assert request.status == decided.status == RequestStatus.FAILED
    assert request.certificate is None
    assert request.reason.startswith("Issuing failed: The certificate violates RFC 5280")
    assert code in request.reason
    assert "(ERROR)" in request.reason or "(FATAL)" in request.reason
    assert not Certificate.objects.exists()
    # its serial was reserved before signing and is never used again: discarded with the findings
    (refused,) = drawn_serials
    reservation = SerialReservation.objects.get(serial=format_serial(serial=refused))
    assert reservation.state == ReservationState.DISCARDED
    assert code in reservation.note
    monkeypatch.undo()  # the profile or URL is sound again
    settings.ENROLL_PUBLIC_URL = "http://pki.example.test"
    again = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk)
    assert again.certificate is not None
    assert again.certificate.serial_int != refused
    assert SerialReservation.objects.count() == 2


def test_the_test_only_profile_is_refused_too(
    ca: CertificateAuthority, alice: User, broken_profile: str
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    EnrollmentRequest.objects.filter(pk=request.pk).update(profile=broken_profile)

    decided = flows.approve(request_id=request.pk)

    assert decided.status == RequestStatus.FAILED
    assert "itu.invalid_asn1_syntax (FATAL)" in decided.reason
    assert "ExtKeyUsageSyntax" in decided.reason
    assert not Certificate.objects.exists()


def test_a_bulk_approval_stores_the_sound_certificates_and_fails_only_the_broken_one(
    ca: CertificateAuthority, alice: User, bob: User, admin_user: User, broken_profile: str
) -> None:
    sound = flows.submit_csr(owner=alice, data=make_csr())
    broken = flows.submit_csr(owner=bob, data=make_csr())
    EnrollmentRequest.objects.filter(pk=broken.pk).update(profile=broken_profile)

    first, second = flows.approve_many(request_ids=[sound.pk, broken.pk], actor=admin_user)

    assert first.outcome == flows.ApprovalOutcome.ISSUED
    assert second.outcome == flows.ApprovalOutcome.FAILED
    assert "RFC 5280" in second.reason
    assert list(Certificate.objects.values_list("owner", flat=True)) == [alice.pk]


def test_a_lint_refused_certificate_costs_no_ca_signature_and_no_serial(
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    admin_user: User,
    broken_profile: str,
    monkeypatch: pytest.MonkeyPatch,
    drawn_serials: list[int],
) -> None:
    spy = install_spy(monkeypatch)
    broken = flows.submit_csr(owner=bob, data=make_csr())
    EnrollmentRequest.objects.filter(pk=broken.pk).update(profile=broken_profile)
    sound = flows.submit_csr(owner=alice, data=make_csr())

    refused, issued = flows.approve_many(request_ids=[broken.pk, sound.pk], actor=admin_user)

    assert refused.outcome == flows.ApprovalOutcome.FAILED
    assert issued.outcome == flows.ApprovalOutcome.ISSUED
    assert issued.certificate is not None
    refused_serial, issued_serial = drawn_serials
    assert issued.certificate.serial_int == issued_serial
    # one CA signature in all: the sound certificate's; the refused one was only ever a throwaway draft
    assert spy.certificate_serials() == [issued_serial]
    assert len(spy.calls) == 1
    # no serial used up: no CA signature carried it, so its reservation is closed (discarded, with the
    # findings as the reason), nothing is left open to revoke and no CRL lists it
    reservation = SerialReservation.objects.get(serial=format_serial(serial=refused_serial))
    assert reservation.state == ReservationState.DISCARDED
    assert "itu.invalid_asn1_syntax (FATAL)" in reservation.note
    later = reservation.reserved_at + reservations.UNSTORED_AFTER + dt.timedelta(minutes=1)
    assert not reservations.unstored(now=later).exists()
    crl = x509.load_der_x509_crl(bytes(publish_crl(ca=ca).der))
    assert crl.get_revoked_certificate_by_serial_number(refused_serial) is None
    assert list(Certificate.objects.values_list("serial", flat=True)) == [issued.certificate.serial]
    # the refusal is on record as before: the request's reason and the audit log
    assert "itu.invalid_asn1_syntax (FATAL)" in refused.reason
    failed = AuditEntry.objects.get(event=AuditEvent.REQUEST_FAILED)
    assert "itu.invalid_asn1_syntax (FATAL)" in failed.detail


@pytest.mark.parametrize("approve", APPROVALS)
def test_a_single_lint_refusal_asks_nothing_of_the_ca_key(
    ca: CertificateAuthority,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    approve: Callable[[EnrollmentRequest], EnrollmentRequest],
) -> None:
    code = critical_aki(monkeypatch, settings)
    spy = install_spy(monkeypatch)

    decided = approve(flows.submit_csr(owner=alice, data=make_csr()))

    assert decided.status == RequestStatus.FAILED
    assert code in decided.reason
    assert spy.calls == []


@pytest.mark.parametrize("parallel_from", [2, 1000], ids=["worker-processes", "in-process"])
def test_a_batch_is_linted_alike_in_worker_processes_and_in_process(
    ca: CertificateAuthority, alice: User, parallel_from: int
) -> None:
    ids = [flows.submit_csr(owner=alice, data=make_csr()).pk for _ in range(4)]
    ders = [
        bytes(r.certificate.der)
        for r in flows.approve_many(request_ids=ids, actor=ca_admin())
        if r.certificate
    ]
    ders.insert(2, b"\x30\x03\x02\x01\x00")

    findings = lint.lint_many(ders=ders, parallel_from=parallel_from)

    assert findings == [lint.lint_certificate(der=der) for der in ders]
    assert [bool(lint.blocking_error(f)) for f in findings] == [False, False, True, False, False]


def test_a_bulk_approval_linted_in_worker_processes_refuses_the_broken_certificate(
    ca: CertificateAuthority, alice: User, bob: User, broken_profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lint, "PARALLEL_FROM", 2)
    sound = [flows.submit_csr(owner=alice, data=make_csr()).pk for _ in range(3)]
    broken = flows.submit_csr(owner=bob, data=make_csr())
    EnrollmentRequest.objects.filter(pk=broken.pk).update(profile=broken_profile)

    results = flows.approve_many(request_ids=[*sound, broken.pk], actor=ca_admin())

    assert [r.outcome for r in results] == [flows.ApprovalOutcome.ISSUED] * 3 + [flows.ApprovalOutcome.FAILED]
    assert "itu.invalid_asn1_syntax (FATAL)" in results[-1].reason
    assert Certificate.objects.count() == 3


def ca_admin() -> User:
    return User.objects.get_or_create(username="lint-admin")[0]


# --- the setting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("approve", APPROVALS)
def test_with_linting_off_the_broken_certificate_is_issued(
    ca: CertificateAuthority,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    approve: Callable[[EnrollmentRequest], EnrollmentRequest],
) -> None:
    settings.ENROLL_LINT_BEFORE_SIGN = False
    code = critical_aki(monkeypatch, settings)

    decided = approve(flows.submit_csr(owner=alice, data=make_csr()))

    assert decided.status == RequestStatus.ISSUED
    assert decided.certificate is not None
    assert any(code in finding for finding in findings_of(decided.certificate, worst=Severity.ERROR))


def settings_value(name: str, value: str | None) -> str:
    """``settings.<name>`` as the settings module reads it with the environment variable of that name."""
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    env = {k: v for k, v in os.environ.items() if k != name}
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    if value is not None:
        env[name] = value
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.mark.parametrize(("value", "expected"), [(None, "True"), ("false", "False"), ("true", "True")])
def test_the_setting_comes_from_the_environment_and_is_on_by_default(
    value: str | None, expected: str
) -> None:
    assert settings_value("ENROLL_LINT_BEFORE_SIGN", value) == expected


# --- the public URL is checked at startup ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "lint_on", "expected"),
    [
        ("http://localhost:8000", True, "no request could be issued"),
        ("http://portal", True, "single label"),
        ("http://localhost:8000", False, "issued anyway"),
        ("http://127.0.0.1:8000", True, None),
        ("http://[::1]:8000", True, None),
        ("https://pki.example.com/portal", True, None),
    ],
    ids=["localhost", "bare-name", "localhost-lint-off", "ipv4", "ipv6", "fqdn"],
)
def test_a_public_url_linters_refuse_is_a_warning_at_startup(
    settings: Settings, url: str, lint_on: bool, expected: str | None
) -> None:
    settings.ENROLL_PUBLIC_URL = url
    settings.ENROLL_LINT_BEFORE_SIGN = lint_on

    messages: list[Any] = check_public_url()

    if expected is None:
        assert messages == []
        return
    (message,) = messages
    assert message.id == "ca.W001"
    assert message.level == checks.WARNING
    assert url in message.msg
    assert expected in message.msg
    assert "127.0.0.1" in message.hint


def test_the_check_runs_with_django_checks(settings: Settings, db: None) -> None:
    """(ca.W002, among Django's checks, reads the database.)"""
    settings.ENROLL_PUBLIC_URL = "http://localhost:8000"

    assert "ca.W001" in [message.id for message in checks.run_checks()]
