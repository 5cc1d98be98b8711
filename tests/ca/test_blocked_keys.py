"""Blocked keys and one key per account: revocations for key compromise block a key; submission and
issuance refuse a blocked key and a key certified for another account; operators block keys in the admin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.errors import AlreadyRevoked, CAError
from ca.models import BlockedKey, BlockedKeySource, Certificate, CertificateAuthority, RevocationReason
from ca.pki.keypolicy import spki_sha256 as spki_digest
from ca.services.issuance import issue_certificate
from ca.services.revocation import revoke_certificate
from enroll import challenges, flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.conftest import make_csr
from tests.spkac_tools import build_spkac

IssueFor = Callable[..., Certificate]

BLOCKED = "reported as compromised"
ANOTHER_ACCOUNT = "belongs to another account"


def spki_of(key: ec.EllipticCurvePrivateKey) -> str:
    return spki_digest(key.public_key())


def block(
    key: ec.EllipticCurvePrivateKey, source: BlockedKeySource = BlockedKeySource.OPERATOR
) -> BlockedKey:
    return BlockedKey.objects.create(spki_sha256=spki_of(key), source=source, created_at=utcnow())


# --- revocations for key compromise block the key ------------------------------------------------------


def revoke_by_operator(certificate: Certificate, reason: RevocationReason) -> None:
    revoke_certificate(certificate=certificate, reason=reason)


def revoke_by_owner(certificate: Certificate, reason: RevocationReason) -> None:
    assert certificate.owner is not None
    flows.revoke_own_certificate(owner=certificate.owner, certificate=certificate, reason=reason)


REVOKE_PATHS = [
    pytest.param(revoke_by_operator, id="operator"),
    pytest.param(revoke_by_owner, id="owner"),
]


@pytest.mark.parametrize("revoke", REVOKE_PATHS)
def test_a_revocation_for_key_compromise_blocks_the_certificates_key(
    ca: CertificateAuthority,
    alice: User,
    issue_for: IssueFor,
    revoke: Callable[[Certificate, RevocationReason], None],
) -> None:
    certificate = issue_for(alice)

    revoke(certificate, RevocationReason.KEY_COMPROMISE)

    blocked = BlockedKey.objects.get()
    assert blocked.spki_sha256 == certificate.spki_sha256
    assert blocked.source == BlockedKeySource.KEY_COMPROMISE
    assert blocked.certificate == certificate
    assert certificate.serial in blocked.detail


@pytest.mark.parametrize("revoke", REVOKE_PATHS)
@pytest.mark.parametrize("reason", [RevocationReason.SUPERSEDED, RevocationReason.CESSATION_OF_OPERATION])
def test_a_revocation_for_another_reason_blocks_nothing(
    ca: CertificateAuthority,
    alice: User,
    issue_for: IssueFor,
    revoke: Callable[[Certificate, RevocationReason], None],
    reason: RevocationReason,
) -> None:
    revoke(issue_for(alice), reason)

    assert not BlockedKey.objects.exists()


def test_a_second_compromise_of_a_blocked_key_keeps_its_first_cause(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = issue_for(alice, make_csr(key))
    second = issue_for(alice, make_csr(key))  # the owner re-used the key (a renewal)
    revoke_certificate(certificate=first, reason=RevocationReason.KEY_COMPROMISE)  # revokes `second` too

    with pytest.raises(AlreadyRevoked):
        revoke_certificate(certificate=second, reason=RevocationReason.KEY_COMPROMISE)

    assert BlockedKey.objects.get().certificate == first


def test_a_compromise_of_a_key_an_operator_blocked_keeps_the_operators_cause(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    BlockedKey.objects.create(
        spki_sha256=certificate.spki_sha256,
        source=BlockedKeySource.OPERATOR,
        detail="lost laptop",
        created_at=utcnow(),
    )

    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)

    blocked = BlockedKey.objects.get()
    assert (blocked.source, blocked.certificate, blocked.detail) == (
        BlockedKeySource.OPERATOR,
        None,
        "lost laptop",
    )


def test_a_revocation_that_fails_blocks_nothing(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)

    with pytest.raises(AlreadyRevoked):
        revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)

    assert not BlockedKey.objects.exists()


# --- submission refuses a blocked key and another account's key ---------------------------------------


def submit_csr(user: User, key: ec.EllipticCurvePrivateKey, client: Client) -> str:
    try:
        flows.submit_csr(owner=user, data=make_csr(key), require_verified_email=True)
    except flows.SubmissionRefused as refused:
        return str(refused)
    return ""


def submit_spkac(user: User, key: ec.EllipticCurvePrivateKey, client: Client) -> str:
    challenge = challenges.issue(owner=user, binding="session").value
    try:
        flows.submit_spkac(
            owner=user,
            data=build_spkac(key, challenge, algorithm="sha256_ecdsa"),
            session_binding="session",
        )
    except flows.SubmissionRefused as refused:
        return str(refused)
    return ""


def submit_in_browser(user: User, key: ec.EllipticCurvePrivateKey, client: Client) -> str:
    client.force_login(user)
    answer = client.post(reverse("portal:keygen-submit"), {"csr": make_csr(key).decode()}).json()
    return "" if answer["ok"] else str(answer["error"])


def submit_on_the_portal(user: User, key: ec.EllipticCurvePrivateKey, client: Client) -> str:
    client.force_login(user)
    page = client.post(reverse("portal:request-new"), {"csr_text": make_csr(key).decode()}).content.decode()
    return BLOCKED if BLOCKED in page else ANOTHER_ACCOUNT if ANOTHER_ACCOUNT in page else ""


SUBMISSIONS = [
    pytest.param(submit_csr, id="csr"),
    pytest.param(submit_spkac, id="spkac"),
    pytest.param(submit_in_browser, id="browser-generated"),
    pytest.param(submit_on_the_portal, id="portal-form"),
]


@pytest.mark.parametrize("submit", SUBMISSIONS)
@pytest.mark.parametrize("source", list(BlockedKeySource))
def test_a_blocked_key_is_refused_at_submission_with_what_to_do(
    ca: CertificateAuthority,
    alice: User,
    client: Client,
    submit: Callable[[User, ec.EllipticCurvePrivateKey, Client], str],
    source: BlockedKeySource,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    block(key, source)

    refusal = submit(alice, key, client)

    assert BLOCKED in refusal
    if submit is not submit_on_the_portal:
        assert "Make a new key" in refusal
    assert not EnrollmentRequest.objects.exists()


@pytest.mark.parametrize("submit", SUBMISSIONS)
@pytest.mark.parametrize("state", ["valid", "revoked", "expired"])
def test_a_key_certified_for_another_account_is_refused_at_submission(
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    client: Client,
    issue_for: IssueFor,
    submit: Callable[[User, ec.EllipticCurvePrivateKey, Client], str],
    state: str,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_for(alice, make_csr(key))
    if state == "revoked":
        revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    if state == "expired":
        Certificate.objects.filter(pk=certificate.pk).update(not_after=utcnow() - dt.timedelta(days=1))

    refusal = submit(bob, key, client)

    assert ANOTHER_ACCOUNT in refusal
    if submit is not submit_on_the_portal:
        assert "Create a new key" in refusal
    assert not EnrollmentRequest.objects.filter(owner=bob).exists()


def test_the_owner_may_use_a_certified_key_again(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issue_for(alice, make_csr(key))

    again = issue_for(alice, make_csr(key))

    assert again.spki_sha256 == spki_of(key)


def test_a_renewal_with_a_blocked_key_is_refused(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_for(alice, make_csr(key))
    block(key)

    with pytest.raises(flows.SubmissionRefused, match=BLOCKED):
        flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr(key))

    assert not certificate.renewals.exists()


# --- issuance refuses them again -----------------------------------------------------------------------


def approve_one(request: EnrollmentRequest, admin: User) -> EnrollmentRequest:
    return flows.approve(request_id=request.pk, by=admin)


def approve_in_bulk(request: EnrollmentRequest, admin: User) -> EnrollmentRequest:
    (result,) = flows.approve_many(request_ids=[request.pk], actor=admin)
    assert result.request is not None
    return result.request


APPROVALS = [pytest.param(approve_one, id="approve"), pytest.param(approve_in_bulk, id="approve_many")]


@pytest.mark.parametrize("approve", APPROVALS)
def test_a_key_blocked_after_submission_fails_at_approval(
    ca: CertificateAuthority,
    alice: User,
    admin_user: User,
    approve: Callable[[EnrollmentRequest, User], EnrollmentRequest],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    request = flows.submit_csr(owner=alice, data=make_csr(key))
    block(key)

    decided = approve(request, admin_user)

    request.refresh_from_db()
    assert request.status == decided.status == RequestStatus.FAILED
    assert request.reason.startswith("Issuing failed: ")
    assert BLOCKED in request.reason
    assert request.certificate is None
    assert not Certificate.objects.exists()


@pytest.mark.parametrize("approve", APPROVALS)
def test_a_key_certified_for_another_account_after_submission_fails_at_approval(
    ca: CertificateAuthority,
    alice: User,
    bob: User,
    admin_user: User,
    approve: Callable[[EnrollmentRequest, User], EnrollmentRequest],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alices = flows.submit_csr(owner=alice, data=make_csr(key))
    bobs = flows.submit_csr(owner=bob, data=make_csr(key))  # nobody holds a certificate for it yet
    assert approve(alices, admin_user).status == RequestStatus.ISSUED

    decided = approve(bobs, admin_user)

    bobs.refresh_from_db()
    assert bobs.status == decided.status == RequestStatus.FAILED
    assert ANOTHER_ACCOUNT in bobs.reason
    assert list(Certificate.objects.values_list("owner", flat=True)) == [alice.pk]


def test_two_accounts_with_one_key_in_one_bulk_approval_get_one_certificate(
    ca: CertificateAuthority, alice: User, bob: User, admin_user: User
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alices = flows.submit_csr(owner=alice, data=make_csr(key))
    bobs = flows.submit_csr(owner=bob, data=make_csr(key))

    first, second = flows.approve_many(request_ids=[alices.pk, bobs.pk], actor=admin_user)

    assert first.outcome == flows.ApprovalOutcome.ISSUED
    assert second.outcome == flows.ApprovalOutcome.FAILED
    assert ANOTHER_ACCOUNT in second.reason
    assert list(Certificate.objects.values_list("owner", flat=True)) == [alice.pk]


def test_the_ca_service_refuses_a_blocked_key_for_any_caller(ca: CertificateAuthority, alice: User) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    block(key, BlockedKeySource.KNOWN_WEAK)

    with pytest.raises(CAError, match=BLOCKED):
        issue_certificate(
            request_der=make_csr(key, encoding=serialization.Encoding.DER),
            subject=flows.subject_for(alice),
            owner=alice,
        )

    assert not Certificate.objects.exists()


# --- the admin ----------------------------------------------------------------------------------------

CHANGELIST = reverse("admin:ca_blockedkey_changelist")


def test_the_admin_lists_blocked_keys_and_finds_them_by_spki_hash(
    admin_user: User, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    other = block(ec.generate_private_key(ec.SECP256R1()))
    client = Client()
    client.force_login(admin_user)

    listing = client.get(CHANGELIST).content.decode()
    found = client.get(CHANGELIST, {"q": certificate.spki_sha256[:20].upper()}).content.decode()

    assert certificate.spki_sha256 in listing
    assert other.spki_sha256 in listing
    assert "Revoked for key compromise" in listing
    assert certificate.spki_sha256 in found
    assert other.spki_sha256 not in found


def test_an_operator_blocks_a_key_in_the_admin_and_it_is_refused(
    admin_user: User, ca: CertificateAuthority, alice: User
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = spki_of(key)
    client = Client()
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:ca_blockedkey_add"),
        {
            "spki_sha256": ":".join(spki[i : i + 2] for i in range(0, 64, 2)).upper(),
            "detail": "leaked on a forum",
        },
    )

    assert response.status_code == 302
    blocked = BlockedKey.objects.get()
    assert blocked.spki_sha256 == spki
    assert blocked.source == BlockedKeySource.OPERATOR
    assert blocked.detail == "leaked on a forum"
    with pytest.raises(flows.SubmissionRefused, match=BLOCKED):
        flows.submit_csr(owner=alice, data=make_csr(key))


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", "This field is required"),
        ("abc", "64 hexadecimal digits"),
        ("g" * 64, "64 hexadecimal digits"),
        ("0" * 66, "64 hexadecimal digits"),
    ],
    ids=["empty", "short", "not-hex", "long"],
)
def test_the_admin_refuses_a_malformed_spki_hash(admin_user: User, value: str, error: str) -> None:
    client = Client()
    client.force_login(admin_user)

    response = client.post(reverse("admin:ca_blockedkey_add"), {"spki_sha256": value, "detail": ""})

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not BlockedKey.objects.exists()


def test_the_admin_refuses_a_key_blocked_already(admin_user: User) -> None:
    existing = block(ec.generate_private_key(ec.SECP256R1()))
    client = Client()
    client.force_login(admin_user)

    response = client.post(reverse("admin:ca_blockedkey_add"), {"spki_sha256": existing.spki_sha256})

    assert response.status_code == 200
    assert "blocked already" in response.content.decode()
    assert BlockedKey.objects.count() == 1


def test_a_blocked_key_cannot_be_edited_or_unblocked_in_the_admin(admin_user: User) -> None:
    existing = block(ec.generate_private_key(ec.SECP256R1()))
    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:ca_blockedkey_change", args=[existing.pk])

    page = client.get(url).content.decode()
    client.post(url, {"spki_sha256": "0" * 64, "detail": "changed"})
    deleting = client.get(reverse("admin:ca_blockedkey_delete", args=[existing.pk]))

    assert existing.spki_sha256 in page
    assert 'name="spki_sha256"' not in page
    existing.refresh_from_db()
    assert existing.detail == ""
    assert deleting.status_code == 403
