"""Device names: chosen at submission on every path, copied to the certificate, kept by a renewal, changed
by the owner only (audited), and never written into a certificate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User

from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority
from enroll import challenges, flows
from enroll.flows.submission import set_device_name
from enroll.models import EnrollmentRequest, RequestStatus, SpkacChallenge
from tests.conftest import make_csr
from tests.spkac_tools import build_spkac

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]

BAD_NAMES = [
    pytest.param("x" * 65, "at most 64 characters", id="too-long"),
    pytest.param("laptop\nrm -rf", "control character", id="line-break"),
    pytest.param("phone\u202egnp.exe", "text-direction override", id="bidi-override"),
    pytest.param("lap\u200btop", "invisible formatting character", id="zero-width-space"),
]


def issued(request: EnrollmentRequest) -> Certificate:
    decided = flows.approve(request_id=request.pk)
    assert decided.certificate is not None, decided.reason
    return decided.certificate


def spkac_line(user: User) -> str:
    challenge = challenges.issue(owner=user, binding=challenges.COMMAND_LINE_BINDING).value
    return build_spkac(ec.generate_private_key(ec.SECP256R1()), challenge, algorithm="sha256_ecdsa")


# --- at submission ------------------------------------------------------------------------------------


def test_it_stores_the_device_name_of_a_csr_without_the_spaces_around_it(alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr(), device_name="  Work laptop ")

    assert EnrollmentRequest.objects.get(pk=request.pk).device_name == "Work laptop"


def test_it_stores_no_device_name_when_none_is_given(alice: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    assert EnrollmentRequest.objects.get(pk=request.pk).device_name == ""


def test_it_stores_the_device_name_of_an_spkac(alice: User) -> None:
    request = flows.submit_spkac(
        owner=alice,
        data=spkac_line(alice),
        session_binding=challenges.COMMAND_LINE_BINDING,
        device_name="Old Firefox",
    )

    assert EnrollmentRequest.objects.get(pk=request.pk).device_name == "Old Firefox"


@pytest.mark.parametrize(("bad_name", "words"), BAD_NAMES)
def test_it_refuses_a_bad_device_name_and_stores_nothing(alice: User, bad_name: str, words: str) -> None:
    with pytest.raises(flows.SubmissionRefused, match=words):
        flows.submit_csr(owner=alice, data=make_csr(), device_name=bad_name)

    assert not EnrollmentRequest.objects.exists()
    assert not AuditEntry.objects.filter(event=AuditEvent.REQUEST_SUBMITTED).exists()


@pytest.mark.parametrize(("bad_name", "words"), BAD_NAMES)
def test_a_bad_device_name_on_an_spkac_leaves_its_challenge_unused(
    alice: User, bad_name: str, words: str
) -> None:
    line = spkac_line(alice)

    with pytest.raises(flows.SubmissionRefused, match=words):
        flows.submit_spkac(
            owner=alice, data=line, session_binding=challenges.COMMAND_LINE_BINDING, device_name=bad_name
        )

    assert not EnrollmentRequest.objects.exists()
    assert SpkacChallenge.objects.get().used_at is None


# --- issued ---------------------------------------------------------------------------------------------


def test_the_certificate_gets_the_device_name_of_its_request(ca: CertificateAuthority, alice: User) -> None:
    certificate = issued(flows.submit_csr(owner=alice, data=make_csr(), device_name="Work laptop"))

    assert Certificate.objects.get(pk=certificate.pk).device_name == "Work laptop"


def test_a_bulk_approval_copies_each_device_name(
    ca: CertificateAuthority, alice: User, bob: User, admin_user: User
) -> None:
    first = flows.submit_csr(owner=alice, data=make_csr(), device_name="Alice's phone")
    second = flows.submit_csr(owner=bob, data=make_csr(), device_name="")
    third = flows.submit_csr(owner=bob, data=make_csr(), device_name="Bob's desktop")

    results = flows.approve_many(request_ids=[first.pk, second.pk, third.pk], actor=admin_user)

    names = [Certificate.objects.get(pk=r.certificate.pk).device_name for r in results if r.certificate]
    assert names == ["Alice's phone", "", "Bob's desktop"]


def test_the_device_name_is_not_in_the_certificate_subject_or_san(
    ca: CertificateAuthority, alice: User
) -> None:
    name = "DeviceNameMarker-7Q"

    certificate = issued(flows.submit_csr(owner=alice, data=make_csr(), device_name=name))

    cert = x509.load_der_x509_certificate(bytes(certificate.der))
    assert name not in cert.subject.rfc4514_string()
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alice"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert all(name not in str(general_name.value) for general_name in san)
    assert name.encode() not in bytes(certificate.der)
    assert name.encode("utf-16-be") not in bytes(certificate.der)


# --- renewal ----------------------------------------------------------------------------------------------


@pytest.fixture
def named(ca: CertificateAuthority, alice: User) -> Certificate:
    return issued(flows.submit_csr(owner=alice, data=make_csr(), device_name="Work laptop"))


def test_a_renewal_keeps_the_device_name_of_the_certificate_it_renews(
    alice: User, named: Certificate
) -> None:
    renewal = flows.submit_renewal(owner=alice, certificate=named, data=make_csr())

    assert renewal.device_name == "Work laptop"
    assert issued(renewal).device_name == "Work laptop"


@pytest.mark.parametrize(("given", "stored"), [("New laptop ", "New laptop"), ("", "")])
def test_a_renewal_may_name_another_device_or_none(
    alice: User, named: Certificate, given: str, stored: str
) -> None:
    renewal = flows.submit_renewal(owner=alice, certificate=named, data=make_csr(), device_name=given)

    assert EnrollmentRequest.objects.get(pk=renewal.pk).device_name == stored


# --- changed by the owner ---------------------------------------------------------------------------------


def test_the_owner_renames_a_request_and_its_certificate_together(alice: User, named: Certificate) -> None:
    request = EnrollmentRequest.objects.get(certificate=named)

    stored = set_device_name(owner=alice, request=request, device_name=" Home desktop ")

    assert stored == "Home desktop"
    assert EnrollmentRequest.objects.get(pk=request.pk).device_name == "Home desktop"
    assert Certificate.objects.get(pk=named.pk).device_name == "Home desktop"


def test_renaming_the_certificate_renames_its_request_too(alice: User, named: Certificate) -> None:
    set_device_name(owner=alice, certificate=named, device_name="")

    assert Certificate.objects.get(pk=named.pk).device_name == ""
    assert EnrollmentRequest.objects.get(certificate=named).device_name == ""


def test_renaming_a_waiting_request_names_the_certificate_issued_later(
    ca: CertificateAuthority, alice: User
) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())

    set_device_name(owner=alice, request=request, device_name="Tablet")

    assert issued(request).device_name == "Tablet"


def test_a_rename_is_audited_with_the_old_and_the_new_name(alice: User, named: Certificate) -> None:
    set_device_name(owner=alice, certificate=named, device_name="Büro")

    (entry,) = AuditEntry.objects.filter(event=AuditEvent.DEVICE_RENAMED)
    assert entry.actor == alice
    assert entry.subject_user == "alice"
    assert entry.serial == named.serial
    assert "'Work laptop' -> 'B\\xfcro'" in entry.detail


def test_setting_the_same_name_again_changes_and_audits_nothing(alice: User, named: Certificate) -> None:
    set_device_name(owner=alice, certificate=named, device_name="  Work laptop")

    assert not AuditEntry.objects.filter(event=AuditEvent.DEVICE_RENAMED).exists()


def test_nobody_but_the_owner_renames(alice: User, bob: User, admin_user: User, named: Certificate) -> None:
    request = EnrollmentRequest.objects.get(certificate=named)

    for other in (bob, admin_user):
        with pytest.raises(flows.FlowError, match="Only the owner"):
            set_device_name(owner=other, certificate=named, device_name="mine now")
        with pytest.raises(flows.FlowError, match="Only the owner"):
            set_device_name(owner=other, request=request, device_name="mine now")

    assert Certificate.objects.get(pk=named.pk).device_name == "Work laptop"
    assert EnrollmentRequest.objects.get(pk=request.pk).device_name == "Work laptop"


@pytest.mark.parametrize(("bad_name", "words"), BAD_NAMES)
def test_a_rename_to_a_bad_name_is_refused_and_changes_nothing(
    alice: User, named: Certificate, bad_name: str, words: str
) -> None:
    with pytest.raises(flows.SubmissionRefused, match=words):
        set_device_name(owner=alice, certificate=named, device_name=bad_name)

    assert Certificate.objects.get(pk=named.pk).device_name == "Work laptop"
    assert not AuditEntry.objects.filter(event=AuditEvent.DEVICE_RENAMED).exists()


def test_a_rejected_request_can_still_be_renamed(alice: User, admin_user: User) -> None:
    request = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=request.pk, by=admin_user, reason="wrong department")

    set_device_name(owner=alice, request=request, device_name="Old phone")

    stored = EnrollmentRequest.objects.get(pk=request.pk)
    assert (stored.status, stored.device_name) == (RequestStatus.REJECTED, "Old phone")
