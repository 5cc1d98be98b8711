"""The SPKAC flow: challenges (random, bound, expiring, single use), submit_spkac, and issuing on approval."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
import time

import pytest
import time_machine
from cryptography import x509
from cryptography.x509.oid import NameOID
from django.contrib.auth.models import User
from django.db import connection
from pytest_django.fixtures import Settings

from ca.errors import CAError
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, RevocationReason
from ca.pki.errors import Refusal, RequestRefused
from ca.services.issuance import issue_certificate
from ca.services.revocation import revoke_certificate
from enroll import challenges, flows
from enroll.challenges import ChallengeProblem, ChallengeRefused
from enroll.models import EnrollmentRequest, RequestKind, RequestStatus, SpkacChallenge
from tests.spkac_tools import key_file, spkac

pytestmark = [pytest.mark.django_db, pytest.mark.real_client]

SESSION = "session-token-of-alices-browser"
OTHER_SESSION = "session-token-of-another-browser"

#: The client profile's extensions (plus the SAN of a verified address), as in test_flow.py.
PROFILE_EXTENSIONS = {
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectKeyIdentifier,
    x509.AuthorityKeyIdentifier,
    x509.CRLDistributionPoints,
    x509.AuthorityInformationAccess,
}


def challenge_for(user: User, binding: str = SESSION) -> str:
    return challenges.issue(owner=user, binding=binding).value


def submit(user: User, line: str, binding: str = SESSION) -> EnrollmentRequest:
    return flows.submit_spkac(owner=user, data=line, session_binding=binding)


def challenge_refusal(user: User, line: str, binding: str = SESSION) -> ChallengeRefused:
    with pytest.raises(ChallengeRefused) as refused:
        submit(user, line, binding)
    assert not EnrollmentRequest.objects.exists()
    return refused.value


# --- challenges --------------------------------------------------------------------------------------


def test_a_challenge_has_160_random_bits_expires_in_30_minutes_and_is_unused(alice: User) -> None:
    first = challenges.issue(owner=alice, binding=SESSION)
    second = challenges.issue(owner=alice, binding=SESSION)

    assert len(first.value) == 40
    assert int(first.value, 16) >= 0  # hex: no quoting needed in a shell or in HTML
    assert first.value != second.value
    assert first.expires_at - first.created_at == dt.timedelta(minutes=30)
    assert first.used_at is None
    assert first.binding == SESSION


def test_challenges_long_expired_are_deleted_when_a_new_one_is_issued(alice: User) -> None:
    start = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False):
        old = challenges.issue(owner=alice, binding=SESSION)
    with time_machine.travel(start + dt.timedelta(days=1), tick=False):
        recent = challenges.issue(owner=alice, binding=SESSION)  # expired, kept: a late replay is named
    with time_machine.travel(start + dt.timedelta(days=3), tick=False):
        new = challenges.issue(owner=alice, binding=SESSION)

    assert set(SpkacChallenge.objects.all()) == {recent, new}
    assert old.pk is not None


# --- accepted ----------------------------------------------------------------------------------------


def test_an_rsa_spkac_from_openssl_becomes_a_submitted_spkac_request(alice: User) -> None:
    value = challenge_for(alice)
    line = spkac(key_file("rsa2048"), value)

    request = submit(alice, line)

    der = base64.b64decode(line.removeprefix("SPKAC="))
    assert request.kind == RequestKind.SPKAC
    assert request.status == RequestStatus.SUBMITTED
    assert bytes(request.request_der) == der
    assert request.request_sha256 == hashlib.sha256(der).hexdigest()
    assert request.key_description == "RSA 2048"
    assert len(request.spki_sha256) == 64
    assert request.requested_subject == ""
    assert SpkacChallenge.objects.get(value=value).used_at is not None
    entry = AuditEntry.objects.get(event=AuditEvent.REQUEST_SUBMITTED)
    assert "SPKAC" in entry.detail
    assert entry.request_sha256 == request.request_sha256


def test_an_ec_p256_spkac_from_openssl_is_accepted(alice: User) -> None:
    request = submit(alice, spkac(key_file("ec-p256"), challenge_for(alice)))

    assert request.key_description == "ECDSA P-256"


# --- refused: MD5, tampering ------------------------------------------------------------------------


def test_an_md5_spkac_is_refused_and_its_challenge_stays_usable(alice: User) -> None:
    value = challenge_for(alice)

    with pytest.raises(RequestRefused) as refused:
        submit(alice, spkac(key_file("rsa2048"), value, digest=None))

    assert refused.value.code == Refusal.SIGNATURE_ALGORITHM
    assert "-digest sha256" in refused.value.message
    assert not EnrollmentRequest.objects.exists()
    assert submit(alice, spkac(key_file("rsa2048"), value)).kind == RequestKind.SPKAC


def test_an_md5_spkac_is_accepted_with_the_legacy_setting(alice: User, settings: Settings) -> None:
    settings.ENROLL_SPKAC_ALLOW_MD5 = True

    request = submit(alice, spkac(key_file("rsa2048"), challenge_for(alice), digest=None))

    assert request.status == RequestStatus.SUBMITTED
    assert "MD5" in AuditEntry.objects.get(event=AuditEvent.REQUEST_SUBMITTED).detail


def test_a_tampered_signature_is_refused_and_nothing_is_stored(alice: User) -> None:
    value = challenge_for(alice)
    der = bytearray(base64.b64decode(spkac(key_file("ec-p256"), value).removeprefix("SPKAC=")))
    der[-1] ^= 0x01

    with pytest.raises(RequestRefused) as refused:
        submit(alice, base64.b64encode(bytes(der)).decode())

    assert refused.value.code == Refusal.BAD_SIGNATURE
    assert not EnrollmentRequest.objects.exists()
    assert SpkacChallenge.objects.get(value=value).used_at is None


# --- refused: the challenge, each with its reason ------------------------------------------------------


def test_a_challenge_the_portal_never_gave_is_refused_as_wrong(alice: User) -> None:
    challenge_for(alice)

    refused = challenge_refusal(alice, spkac(key_file("ec-p256"), "0" * 40))

    assert refused.code == ChallengeProblem.WRONG
    assert "not given to you" in refused.message


def test_another_users_challenge_is_refused_as_wrong(alice: User, bob: User) -> None:
    bobs = challenge_for(bob)

    refused = challenge_refusal(alice, spkac(key_file("ec-p256"), bobs))

    assert refused.code == ChallengeProblem.WRONG
    assert SpkacChallenge.objects.get(value=bobs).used_at is None


def test_another_sessions_challenge_is_refused(alice: User) -> None:
    value = challenge_for(alice, OTHER_SESSION)

    refused = challenge_refusal(alice, spkac(key_file("ec-p256"), value), SESSION)

    assert refused.code == ChallengeProblem.OTHER_SESSION
    assert "another session" in refused.message
    assert SpkacChallenge.objects.get(value=value).used_at is None


def test_the_command_lines_challenge_is_refused_in_a_web_session_and_back(alice: User) -> None:
    cli = challenge_for(alice, challenges.COMMAND_LINE_BINDING)
    web = challenge_for(alice, SESSION)

    assert challenge_refusal(alice, spkac(key_file("ec-p256"), cli), SESSION).code == (
        ChallengeProblem.OTHER_SESSION
    )
    assert challenge_refusal(
        alice, spkac(key_file("ec-p256"), web), challenges.COMMAND_LINE_BINDING
    ).code == (ChallengeProblem.OTHER_SESSION)


def test_an_expired_challenge_is_refused(alice: User) -> None:
    start = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False):
        value = challenge_for(alice)
    line = spkac(key_file("ec-p256"), value)

    with time_machine.travel(start + dt.timedelta(minutes=30, seconds=1), tick=False):
        refused = challenge_refusal(alice, line)

    assert refused.code == ChallengeProblem.EXPIRED
    assert "expired" in refused.message


def test_a_challenge_still_works_just_before_it_expires(alice: User) -> None:
    start = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False):
        value = challenge_for(alice)

    with time_machine.travel(start + dt.timedelta(minutes=29, seconds=59), tick=False):
        request = submit(alice, spkac(key_file("ec-p256"), value))

    assert request.status == RequestStatus.SUBMITTED


def test_a_replay_of_a_used_challenge_is_refused(alice: User) -> None:
    line = spkac(key_file("ec-p256"), challenge_for(alice))
    first = submit(alice, line)

    with pytest.raises(ChallengeRefused) as refused:
        submit(alice, line)

    assert refused.value.code == ChallengeProblem.USED
    assert "used already" in refused.value.message
    assert list(EnrollmentRequest.objects.all()) == [first]


def test_a_replay_with_a_new_spkac_for_the_same_challenge_is_refused(alice: User) -> None:
    value = challenge_for(alice)
    submit(alice, spkac(key_file("ec-p256"), value))

    with pytest.raises(ChallengeRefused) as refused:
        submit(alice, spkac(key_file("rsa2048"), value))

    assert refused.value.code == ChallengeProblem.USED


def test_a_refusal_after_the_challenge_leaves_it_unused(
    alice: User, bob: User, ca: CertificateAuthority
) -> None:
    """A compromised key is refused inside the same transaction: the challenge is not spent."""
    first = submit(bob, spkac(key_file("ec-p256"), challenge_for(bob)))
    certificate = flows.approve(request_id=first.pk).certificate
    assert certificate is not None
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    value = challenge_for(alice)

    with pytest.raises(flows.SubmissionRefused, match="compromised"):
        submit(alice, spkac(key_file("ec-p256"), value))

    assert SpkacChallenge.objects.get(value=value).used_at is None


def test_an_unverified_address_is_refused_when_the_portal_asks(db: None) -> None:
    carol = User.objects.create_user("carol", "carol@example.com", "carol-password-123")
    value = challenge_for(carol)

    with pytest.raises(flows.SubmissionRefused, match="Verify your e-mail"):
        flows.submit_spkac(
            owner=carol,
            data=spkac(key_file("ec-p256"), value),
            session_binding=SESSION,
            require_verified_email=True,
        )


# --- issuing -----------------------------------------------------------------------------------------


def test_an_approved_spkac_gives_a_certificate_with_the_account_subject_and_the_profiles_extensions(
    alice: User, ca: CertificateAuthority
) -> None:
    line = spkac(key_file("rsa2048"), challenge_for(alice))
    request = submit(alice, line)

    approved = flows.approve(request_id=request.pk)

    assert approved.status == RequestStatus.ISSUED, approved.reason
    assert approved.certificate is not None
    cert = approved.certificate.x509
    assert cert.subject == x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Enroll Portal"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
        ]
    )
    extensions = cert.extensions
    assert {type(e.value) for e in extensions} == PROFILE_EXTENSIONS | {x509.SubjectAlternativeName}
    assert len(extensions) == len(PROFILE_EXTENSIONS) + 1
    assert list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.RFC822Name("alice@example.com")
    ]
    assert approved.certificate.spki_sha256 == request.spki_sha256
    assert approved.certificate.request_sha256 == request.request_sha256


def test_the_ca_rechecks_an_md5_spkac_when_the_legacy_setting_was_turned_off(
    alice: User, ca: CertificateAuthority, settings: Settings
) -> None:
    settings.ENROLL_SPKAC_ALLOW_MD5 = True
    request = submit(alice, spkac(key_file("rsa2048"), challenge_for(alice), digest=None))
    settings.ENROLL_SPKAC_ALLOW_MD5 = False

    failed = flows.approve(request_id=request.pk)

    assert failed.status == RequestStatus.FAILED
    assert "MD5" in failed.reason
    assert failed.certificate is None


def test_an_md5_spkac_issues_while_the_legacy_setting_is_on(
    alice: User, ca: CertificateAuthority, settings: Settings
) -> None:
    settings.ENROLL_SPKAC_ALLOW_MD5 = True
    request = submit(alice, spkac(key_file("rsa2048"), challenge_for(alice), digest=None))

    assert flows.approve(request_id=request.pk).status == RequestStatus.ISSUED


def test_the_ca_refuses_a_stored_spkac_that_was_altered(alice: User, ca: CertificateAuthority) -> None:
    request = submit(alice, spkac(key_file("ec-p256"), challenge_for(alice)))
    der = bytearray(bytes(request.request_der))
    der[-1] ^= 0x01
    EnrollmentRequest.objects.filter(pk=request.pk).update(request_der=bytes(der))

    failed = flows.approve(request_id=request.pk)

    assert failed.status == RequestStatus.FAILED
    assert "signature" in failed.reason


def test_the_ca_service_signs_an_spkac_only_as_an_spkac(alice: User, ca: CertificateAuthority) -> None:
    request = submit(alice, spkac(key_file("ec-p256"), challenge_for(alice)))
    der = bytes(request.request_der)

    with pytest.raises(CAError) as refused:  # the re-check as a CSR refuses it (one issuance path: a CAError)
        issue_certificate(request_der=der, subject=flows.subject_for(alice), owner=alice)
    assert "request" in str(refused.value).lower()
    assert not Certificate.objects.exists()
    with pytest.raises(CAError, match="Unknown request format"):
        issue_certificate(request_der=der, subject=flows.subject_for(alice), owner=alice, kind="pkcs7")
    certificate = issue_certificate(
        request_der=der, subject=flows.subject_for(alice), owner=alice, kind="spkac"
    )
    assert certificate.spki_sha256 == request.spki_sha256


# --- PostgreSQL: several web processes at once ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL)")
@pytest.mark.django_db(transaction=True)
def test_submissions_racing_with_one_challenge_use_it_once(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = challenge_for(alice)
    line = spkac(key_file("ec-p256"), value)
    compare = challenges._same

    def slow_compare(a: str, b: str) -> bool:
        time.sleep(0.2)  # every racer reads the challenge as unused before anyone marks it
        return compare(a, b)

    monkeypatch.setattr(challenges, "_same", slow_compare)
    barrier = threading.Barrier(4)
    outcomes: list[object] = []
    lock = threading.Lock()

    def racer() -> None:
        try:
            barrier.wait(timeout=30)
            outcome: object = submit(alice, line)
        except ChallengeRefused as exc:
            outcome = exc.code
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(map(str, outcomes)).count(str(ChallengeProblem.USED)) == 3
    assert EnrollmentRequest.objects.count() == 1
