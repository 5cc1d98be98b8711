"""The revocation screen: choose, confirm, revoke (the CRL lists it), CRL health, republish, permissions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import time_machine
from cryptography import x509
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, CrlPublication, Revocation, RevocationReason
from ca.pki.node_reports import ReportOutcome
from ca.services import frontservers
from ca.services.crl import current_crl
from ca.services.keys import clear_key_cache, key_path
from ca.services.propagation import CrlColor, crl_color
from ca.services.revocation import revoke_certificate
from tests.ca.reporting import report_installed

SCREEN = reverse("admin:ca-revocation")

IssueFor = Callable[..., Certificate]

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def certificate(ca: CertificateAuthority, alice: User, issue_for: IssueFor) -> Certificate:
    return issue_for(alice)


def republish_url(ca: CertificateAuthority) -> str:
    return reverse("admin:ca-crl-republish", args=[ca.pk])


def messages_of(response: Response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def colons_lower(certificate: Certificate) -> str:
    return certificate.serial_colons.lower()


def review(client: Client, **data: Any) -> Response:
    return client.post(SCREEN, {"step": "review", "reason": "unspecified", **data})


def revoked_serials(crl: CrlPublication) -> set[int]:
    return {entry.serial_number for entry in x509.load_der_x509_crl(bytes(crl.der))}


# --- choosing and confirming -----------------------------------------------------------------------


def test_the_screen_shows_the_form_and_the_current_crl(
    admin_client: Client, ca: CertificateAuthority
) -> None:
    crl = current_crl(ca=ca)
    response = admin_client.get(SCREEN)
    assert response.status_code == 200
    content = response.content.decode()
    for text in ("Serial numbers", "Reason", "Key compromise", "Invalidity date", "Republish now"):
        assert text in content
    for text in (str(crl.number), crl.sha256, f"{len(bytes(crl.der))} bytes", "thisUpdate", "nextUpdate"):
        assert text in content
    assert 'data-health="green"' in content
    assert "more than half of the lifetime" in content  # the health rule is documented on the page


def test_serials_in_any_format_lead_to_a_confirmation(
    admin_client: Client, certificate: Certificate, issue_for: IssueFor, bob: User
) -> None:
    other = issue_for(bob)
    response = review(
        admin_client,
        serials=f"{colons_lower(certificate)}\n  {other.serial.lower()} ,",
        reason="key_compromise",
    )
    assert response.status_code == 200
    assert response.templates[0].name == "admin/ca/certificate/revocation_confirm.html"
    content = response.content.decode()
    assert certificate.serial_colons in content
    assert other.serial_colons in content
    assert "key compromise" in content
    assert not Revocation.objects.exists()  # nothing happens before the confirmation


@pytest.mark.parametrize(
    ("serials", "error"),
    [
        ("not-a-serial", "is not a serial number"),
        ("12:zz", "is not a serial number"),
        ("00", "positive number"),
        ("ab" * 30, "at most 20 octets"),
        ("0123456789ABCDEF", "No certificate with serial 0123456789ABCDEF"),
        ("", "Choose at least one certificate"),
        ("\ufffd<script>", "is not a serial number"),
        ("12\x00", "Null characters are not allowed"),
        ("1," * 600, "at most 500"),
    ],
)
def test_bad_serials_are_inline_errors(
    admin_client: Client, certificate: Certificate, serials: str, error: str
) -> None:
    response = review(admin_client, serials=serials)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/ca/certificate/revocation.html"
    assert error in response.content.decode().replace("&#x27;", "'")
    assert not Revocation.objects.exists()


def test_other_bad_input_is_inline_errors(admin_client: Client, certificate: Certificate) -> None:
    serial = certificate.serial
    future = (utcnow() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"serials": serial, "invalidity_date": future}, "cannot be in the future"),
        ({"serials": serial, "invalidity_date": "yesterday-ish"}, "Enter a valid date/time"),
        ({"serials": serial, "reason": "remove_from_crl"}, "Select a valid choice"),
        ({"certificates": ["abc"], "offered": ["abc", "1" * 40]}, "is not a valid value"),
        ({"offered": ["abc", "1" * 40]}, "Choose at least one certificate"),
    ]
    for data, error in cases:
        response = review(admin_client, **data)
        assert response.status_code == 200
        assert error in response.content.decode()
    assert not Revocation.objects.exists()


def test_certificates_revoked_already_are_skipped_or_refused(
    admin_client: Client, certificate: Certificate, issue_for: IssueFor, alice: User
) -> None:
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    response = review(admin_client, serials=certificate.serial)
    assert "revoked already" in response.content.decode()
    assert response.templates[0].name == "admin/ca/certificate/revocation.html"
    other = issue_for(alice)
    response = review(
        admin_client, certificates=[certificate.pk, other.pk], offered=[certificate.pk, other.pk]
    )
    assert response.templates[0].name == "admin/ca/certificate/revocation_confirm.html"
    content = response.content.decode()
    assert "Revoked already, left as they are" in content
    assert certificate.serial_colons in content
    assert response.context["to_revoke"] == [other]


@pytest.mark.django_db(transaction=True)
def test_confirming_revokes_and_the_new_crl_lists_the_serial(
    admin_client: Client, certificate: Certificate, admin_user: User
) -> None:
    ca = certificate.ca
    before = current_crl(ca=ca).number
    confirm = review(
        admin_client,
        serials=colons_lower(certificate),
        reason="key_compromise",
        invalidity_date=(utcnow() - dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"),
    )
    confirm_form = confirm.context["confirm"]
    data = {"step": "revoke", **{k: v for k, v in confirm_form.initial.items() if k != "certificates"}}
    data["certificates"] = confirm_form.initial["certificates"]
    response = admin_client.post(SCREEN, data)
    assert response.status_code == 302
    assert response["Location"] == SCREEN
    revocation = Revocation.objects.get(certificate=certificate)
    assert revocation.reason == RevocationReason.KEY_COMPROMISE
    assert revocation.revoked_by == admin_user
    assert revocation.invalidity_date is not None
    latest = CrlPublication.objects.filter(ca=ca).order_by("-number").first()
    assert latest is not None
    assert latest.number > before
    assert certificate.serial_int in revoked_serials(latest)  # published on commit, before the redirect
    current = current_crl(ca=ca)
    assert current.number == latest.number
    texts = messages_of(response)
    assert any("Revoked 1 certificate" in t and certificate.serial in t for t in texts)
    assert any(f"CRL #{latest.number}" in t for t in texts)
    page = admin_client.get(SCREEN).content.decode()
    assert str(latest.number) in page


def test_confirming_a_tampered_selection_revokes_nothing(
    admin_client: Client, certificate: Certificate
) -> None:
    for data in (
        {"step": "revoke", "certificates": ["abc"], "reason": "unspecified"},
        {"step": "revoke", "certificates": [certificate.pk], "reason": "bogus"},
        {"step": "revoke", "reason": "unspecified"},
        {"step": "revoke", "certificates": [certificate.pk], "reason": "unspecified", "invalidity_date": "x"},
    ):
        response = admin_client.post(SCREEN, data)
        assert response.status_code == 302
        assert any("nothing was revoked" in m for m in messages_of(response))
    assert not Revocation.objects.exists()


def test_a_certificate_revoked_meanwhile_is_reported(
    admin_client: Client, certificate: Certificate, django_capture_on_commit_callbacks: Any
) -> None:
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    data = {"step": "revoke", "certificates": [certificate.pk], "reason": "key_compromise"}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(SCREEN, data)
    assert any("was revoked already" in m for m in messages_of(response))
    assert Revocation.objects.get().reason == RevocationReason.SUPERSEDED


def test_a_future_invalidity_date_is_refused_even_when_posted_directly(
    admin_client: Client, certificate: Certificate
) -> None:
    future = (utcnow() + dt.timedelta(days=1)).isoformat()
    data = {
        "step": "revoke",
        "certificates": [certificate.pk],
        "reason": "key_compromise",
        "invalidity_date": future,
    }
    response = admin_client.post(SCREEN, data)
    assert any("was not revoked" in m and "future" in m for m in messages_of(response))
    assert not Revocation.objects.exists()


# --- CRL health and republishing -------------------------------------------------------------------


def test_republish_increments_the_crl_number(
    admin_client: Client, ca: CertificateAuthority, admin_user: User
) -> None:
    before = current_crl(ca=ca).number
    assert admin_client.get(republish_url(ca)).status_code == 405
    response = admin_client.post(republish_url(ca))
    assert response.status_code == 302
    assert response["Location"] == SCREEN
    latest = CrlPublication.objects.filter(ca=ca).order_by("-number").first()
    assert latest is not None
    assert latest.number > before
    assert any(f"Published CRL #{latest.number}" in m for m in messages_of(response))
    assert admin_client.post(reverse("admin:ca-crl-republish", args=[999])).status_code == 404


def test_republish_failure_is_a_message(
    admin_client: Client, ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path(ca).unlink()  # the CA key is gone: the CRL cannot be signed
    clear_key_cache()
    response = admin_client.post(republish_url(ca))
    assert response.status_code == 302
    assert any("could not be signed" in m and "cannot be read" in m for m in messages_of(response))


def test_health_rule() -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=10)

    def at(days: float) -> CrlColor:
        return crl_color(this_update=start, next_update=end, now=start + dt.timedelta(days=days))

    assert at(0) == at(4.9) == CrlColor.GREEN
    assert at(5) == at(8.9) == CrlColor.AMBER
    assert at(9.1) == at(10) == at(30) == CrlColor.RED
    assert crl_color(this_update=end, next_update=start, now=start) == CrlColor.RED


@pytest.mark.parametrize(
    ("elapsed", "health", "text"),
    [
        (0.0, "green", "Fresh"),
        (0.3, "green", "Fresh"),
        (0.6, "amber", "Re-sign overdue"),
        (0.95, "red", "About to expire"),
        (1.5, "red", "Expired"),
    ],
)
def test_health_on_the_screen_under_a_frozen_clock(
    admin_client: Client, ca: CertificateAuthority, elapsed: float, health: str, text: str
) -> None:
    crl = current_crl(ca=ca)
    lifetime = crl.next_update - crl.this_update
    with time_machine.travel(crl.this_update + lifetime * elapsed, tick=False):
        response = admin_client.get(SCREEN)
    content = response.content.decode()
    assert f'data-health="{health}"' in content
    assert text in content
    assert CrlPublication.objects.filter(ca=ca).count() == 1  # looking does not re-sign


def test_a_ca_without_crl_is_red(admin_client: Client, ca: CertificateAuthority) -> None:
    CrlPublication.objects.filter(ca=ca).delete()
    content = admin_client.get(SCREEN).content.decode()
    assert 'data-health="red"' in content
    assert "No CRL has been published" in content


# --- front servers ---------------------------------------------------------------------------------


def test_without_a_registered_front_server_the_screen_says_how_to_register_one(
    admin_client: Client, ca: CertificateAuthority
) -> None:
    content = admin_client.get(SCREEN).content.decode()
    assert "No front server registered: <code>manage.py frontserver add NAME</code>" in content


def test_the_screen_shows_each_node_with_its_color_number_and_error_and_polls_without_inline_script(
    admin_client: Client, ca: CertificateAuthority
) -> None:
    client = Client()
    web1 = frontservers.register(name="web1", cas=[ca], actor="test")[1]
    web2 = frontservers.register(name="web2", cas=[ca], actor="test")[1]
    frontservers.register(name="web3", cas=[ca], actor="test")
    number = current_crl(ca=ca).number
    report_installed(client, node="web1", token=web1, crls=[(ca, number)])
    report_installed(
        client, node="web2", token=web2, crls=[(ca, number)], outcome=ReportOutcome.FAILED, error="disk full"
    )

    content = admin_client.get(SCREEN).content.decode()

    assert '<tr data-node="web1" data-colour="green">' in content
    assert '<tr data-node="web2" data-colour="red">' in content
    assert '<tr data-node="web3" data-colour="red">' in content
    assert f"#{number}" in content
    assert "disk full" in content
    assert "has never reported" in content
    assert "its last run failed" in content
    assert 'src="/static/ca/propagation.js"' in content
    assert 'aria-live="polite"' in content
    assert 'data-health-url="/pki/health.json"' in content
    assert '<script id="enroll-node-states" type="application/json">' in content
    assert "<script>" not in content  # the CSP allows no inline script


def test_after_a_revocation_a_node_turns_green_once_it_reports_the_new_crl(
    admin_client: Client, certificate: Certificate, django_capture_on_commit_callbacks: Any
) -> None:
    ca = certificate.ca
    client = Client()
    token = frontservers.register(name="web1", cas=[ca], actor="test")[1]
    old = current_crl(ca=ca).number
    report_installed(client, node="web1", token=token, crls=[(ca, old)])
    with django_capture_on_commit_callbacks(execute=True):  # the new CRL is published on commit
        revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    assert current_crl(ca=ca).number > old

    assert '<tr data-node="web1" data-colour="amber">' in admin_client.get(SCREEN).content.decode()

    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number)])

    assert '<tr data-node="web1" data-colour="green">' in admin_client.get(SCREEN).content.decode()


# --- permissions and CSRF --------------------------------------------------------------------------


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user("sam", "sam@example.com", "pw-123456789", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="ca"))
    client = Client()
    client.force_login(user)
    return client


def test_staff_without_the_permission_gets_403(certificate: Certificate) -> None:
    client = staff_client("view_certificate", "change_certificate")
    assert client.get(SCREEN).status_code == 403
    assert review(client, serials=certificate.serial).status_code == 403
    data = {"step": "revoke", "certificates": [certificate.pk], "reason": "unspecified"}
    assert client.post(SCREEN, data).status_code == 403
    assert client.post(republish_url(certificate.ca)).status_code == 403
    assert not Revocation.objects.exists()
    assert reverse("admin:ca-revocation") not in client.get(reverse("admin:index")).content.decode()


def test_staff_with_the_permission_may_revoke(certificate: Certificate) -> None:
    client = staff_client("add_revocation")
    assert client.get(SCREEN).status_code == 200
    assert reverse("admin:ca-revocation") in client.get(reverse("admin:index")).content.decode()
    response = client.post(
        SCREEN, {"step": "revoke", "certificates": [certificate.pk], "reason": "superseded"}
    )
    assert response.status_code == 302
    assert Revocation.objects.filter(certificate=certificate).exists()


def test_people_who_are_not_staff_are_sent_to_the_login(alice: User, ca: CertificateAuthority) -> None:
    client = Client()
    assert client.get(SCREEN).status_code == 302
    client.force_login(alice)
    response = client.get(SCREEN)
    assert response.status_code == 302
    assert "login" in response["Location"]
    assert client.post(republish_url(ca)).status_code == 302
    assert CrlPublication.objects.filter(ca=ca).count() == 1


def test_every_post_needs_the_csrf_token(admin_user: User, certificate: Certificate) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    crls = CrlPublication.objects.count()
    assert review(client, serials=certificate.serial).status_code == 403
    data = {"step": "revoke", "certificates": [certificate.pk], "reason": "unspecified"}
    assert client.post(SCREEN, data).status_code == 403
    assert client.post(republish_url(certificate.ca)).status_code == 403
    assert not Revocation.objects.exists()
    assert CrlPublication.objects.count() == crls
    page = client.get(SCREEN)
    assert page.status_code == 200
    assert "csrfmiddlewaretoken" in page.content.decode()


def test_the_front_server_admin_lists_nodes_read_only(admin_client: Client, ca: CertificateAuthority) -> None:
    frontservers.register(name="web1", cas=[ca], actor="test")

    listing = admin_client.get(reverse("admin:ca_frontserver_changelist"))

    assert listing.status_code == 200
    assert "web1" in listing.content.decode()
    assert ca.slug in listing.content.decode()
    assert admin_client.get(reverse("admin:ca_frontserver_add")).status_code == 403
