"""The dashboard's "What to do next" (enroll.pages.dashboard_of): each certificate asks for at most one step,
and a step ends once it is done: "ready: download it" at the owner's first download, "expires in N days:
renew" once renewed, "renewed: revoke the old one" once the old one is revoked or expired."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import FirstDownload
from enroll.pages import RENEW_SOON_DAYS, dashboard_of
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db

IssueFor = Callable[..., Certificate]

READY = "Download your certificate"
RENEW = "Renew"
REVOKE_OLD = "Revoke the old certificate"


def steps_of(user: User) -> list[tuple[str, str]]:
    """The dashboard's steps as (button, link)."""
    return [(step.link_text, step.link) for step in dashboard_of(user, now=utcnow()).steps]


def detail(certificate: Certificate) -> str:
    return reverse("portal:certificate-detail", args=[certificate.pk])


def download(client: Client, certificate: Certificate, fmt: str = "pem") -> None:
    response = client.get(reverse("portal:certificate-download", args=[certificate.pk, fmt]))
    assert response.status_code == 200


def expire_in(certificate: Certificate, days: int) -> None:
    Certificate.objects.filter(pk=certificate.pk).update(
        not_after=utcnow() + dt.timedelta(days=days, hours=1)
    )


def renew(certificate: Certificate, admin: User) -> Certificate:
    assert certificate.owner is not None
    renewal = flows.submit_renewal(owner=certificate.owner, certificate=certificate, data=make_csr())
    issued = flows.approve(request_id=renewal.pk, by=admin)
    assert issued.certificate is not None, issued.reason
    return issued.certificate


@pytest.fixture
def owner(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def test_the_ready_step_ends_at_the_owners_first_download(
    owner: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    assert steps_of(alice) == [(READY, detail(certificate))]
    page = owner.get(reverse("portal:dashboard")).content.decode()
    assert page.count("is ready: download it") == 1

    download(owner, certificate, "chain")  # the browser-built .p12 fetches the chain too

    assert steps_of(alice) == []
    assert "is ready" not in owner.get(reverse("portal:dashboard")).content.decode()


def test_a_download_by_staff_leaves_the_ready_step(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    helpdesk = User.objects.create_user("helpdesk", "h@example.com", "helpdesk-password-123", is_staff=True)
    helpdesk.user_permissions.add(Permission.objects.get(codename="view_certificate"))
    client.force_login(helpdesk)

    download(client, certificate)

    assert steps_of(alice) == [(READY, detail(certificate))]


def test_the_ready_step_ends_when_the_certificate_is_revoked(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    keep = issue_for(alice)

    revoke_certificate(certificate=certificate, reason=RevocationReason.CESSATION_OF_OPERATION)

    assert steps_of(alice) == [(READY, detail(keep))]


def test_an_expiring_certificate_asks_for_renewal_instead_of_a_download(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    expire_in(certificate, RENEW_SOON_DAYS - 1)

    (step,) = dashboard_of(alice, now=utcnow()).steps

    assert step.link_text == RENEW
    assert step.link == reverse("portal:certificate-renew", args=[certificate.pk])
    assert f"expires in {RENEW_SOON_DAYS - 1} days" in step.text


def test_a_certificate_outside_the_renewal_window_asks_nothing_once_downloaded(
    owner: Client, ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    download(owner, certificate)
    expire_in(certificate, RENEW_SOON_DAYS + 1)

    assert steps_of(alice) == []


def test_a_renewal_walks_through_download_then_revoke_the_old_one_then_nothing(
    owner: Client, ca: CertificateAuthority, alice: User, admin_user: User, issue_for: IssueFor
) -> None:
    old = issue_for(alice)
    download(owner, old)
    expire_in(old, 5)
    assert [button for button, _ in steps_of(alice)] == [RENEW]

    new = renew(old, admin_user)
    assert steps_of(alice) == [(READY, detail(new))], "the new one first; the old one waits"

    download(owner, new)
    assert steps_of(alice) == [(REVOKE_OLD, reverse("portal:certificate-revoke", args=[old.pk]))]

    revoke_certificate(certificate=old, reason=RevocationReason.SUPERSEDED)
    assert steps_of(alice) == []


def test_the_revoke_the_old_one_step_ends_when_the_old_one_expires(
    owner: Client, ca: CertificateAuthority, alice: User, admin_user: User, issue_for: IssueFor
) -> None:
    old = issue_for(alice)
    new = renew(old, admin_user)
    download(owner, new)
    assert steps_of(alice) == [(REVOKE_OLD, reverse("portal:certificate-revoke", args=[old.pk]))]

    Certificate.objects.filter(pk=old.pk).update(
        not_before=old.not_before - dt.timedelta(days=800), not_after=utcnow() - dt.timedelta(days=1)
    )

    assert steps_of(alice) == []


def test_a_pending_renewal_replaces_the_renew_step_with_the_requests_own(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    FirstDownload.record(certificate=certificate, by=alice, fmt="pem", now=utcnow())
    expire_in(certificate, 3)

    renewal = flows.submit_renewal(owner=alice, certificate=certificate, data=make_csr())

    assert steps_of(alice) == [("See the request", reverse("portal:request-detail", args=[renewal.pk]))]


def test_each_certificate_asks_at_most_one_step_and_the_page_shows_each_once(
    owner: Client, ca: CertificateAuthority, alice: User, admin_user: User, issue_for: IssueFor
) -> None:
    certificates = [issue_for(alice) for _ in range(4)]
    expire_in(certificates[0], 2)  # not downloaded and expiring: the renewal is what matters
    download(owner, certificates[1])
    renew(certificates[2], admin_user)

    links = [link for _, link in steps_of(alice)]
    page = owner.get(reverse("portal:dashboard")).content.decode()

    assert len(links) == len(set(links)) == 3
    assert page.count(' next-step">') == 3
    for link in links:
        assert page.count(f'href="{link}"') >= 1


def test_certificates_issued_before_downloads_were_recorded_ask_nothing(
    ca: CertificateAuthority, alice: User, issue_for: IssueFor
) -> None:
    certificate = issue_for(alice)
    assert steps_of(alice) == [(READY, detail(certificate))]
    migration = importlib.import_module("enroll.migrations.0006_first_download")

    migration.backfill(apps, None)

    assert FirstDownload.objects.get(certificate=certificate).downloaded_at is None
    assert steps_of(alice) == []
