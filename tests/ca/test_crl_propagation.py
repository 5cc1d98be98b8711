"""Which front servers have which CRL: recorded from `X-Enroll-Node` on CRL fetches, shown as JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from ca.models import Certificate, CertificateAuthority, CrlFetch, RevocationReason
from ca.services.crl import current_crl, publish_crl
from ca.services.propagation import crl_health, record_fetch
from ca.services.revocation import revoke_certificate


def fetch(
    client: Client, ca: CertificateAuthority, node: str | None, *, if_none_match: str | None = None
) -> int:
    headers = {"X-Enroll-Node": node} if node else {}
    if if_none_match:
        headers["If-None-Match"] = if_none_match
    return client.get(f"/pki/{ca.slug}.crl.pem", headers=headers).status_code


def test_a_fetch_with_a_node_name_is_recorded(client: Client, ca: CertificateAuthority) -> None:
    assert fetch(client, ca, "web1") == 200
    row = CrlFetch.objects.get(ca=ca, node="web1")
    assert row.number == current_crl(ca=ca).number


def test_a_fetch_without_a_node_name_records_nothing(client: Client, ca: CertificateAuthority) -> None:
    fetch(client, ca, None)
    assert not CrlFetch.objects.exists()


@pytest.mark.parametrize("name", ["", "-leading-dash", "a" * 65, "web 1", "web1;drop", "wéb"])
def test_malformed_node_names_are_ignored(client: Client, ca: CertificateAuthority, name: str) -> None:
    record_fetch(ca=ca, node=name, number=1)
    assert not CrlFetch.objects.exists()


def test_the_summary_says_who_has_the_newest_crl_and_who_lags(
    client: Client, ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)
    with time_machine.travel(dt.datetime(2026, 11, 28, 10, 2, tzinfo=dt.UTC), tick=False):
        publish_crl(ca=ca)
        fetch(client, ca, "web1")
        fetch(client, ca, "web2")
        fetch(client, ca, "web3")
        old = current_crl(ca=ca).number
    with time_machine.travel(dt.datetime(2026, 11, 28, 10, 5, tzinfo=dt.UTC), tick=False):
        revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
        new = current_crl(ca=ca).number
        fetch(client, ca, "web1")
        etag = client.get(f"/pki/{ca.slug}.crl.pem")["ETag"]
        assert fetch(client, ca, "web2", if_none_match=etag) == 304  # a 304 also counts
        health = crl_health(ca=ca)
    assert new > old
    assert health.summary == f"CRL #{new}: web1, web2 have it; web3 still at #{old} since 10:02"
    assert [n.current for n in health.nodes] == [True, True, False]


def test_the_health_endpoint_reports_every_ca_with_seconds_left(
    client: Client, ca: CertificateAuthority
) -> None:
    fetch(client, ca, "web1")
    response = client.get("/pki/health.json")
    assert response.status_code == 200
    data = response.json()
    assert data["ok"] is True
    (entry,) = data["authorities"]
    assert entry["ca"] == ca.slug
    assert entry["crl_number"] == current_crl(ca=ca).number
    assert 0 < entry["seconds_left"] <= 7 * 24 * 3600
    assert entry["nodes"][0]["node"] == "web1"
    assert entry["nodes"][0]["current"] is True


def test_the_revocation_screen_shows_who_has_the_newest_crl(
    client: Client, ca: CertificateAuthority, admin_user: User
) -> None:
    fetch(client, ca, "web7")
    client.force_login(admin_user)
    page = client.get("/admin/ca/certificate/revocation/").content.decode()
    assert f"CRL #{current_crl(ca=ca).number}: web7 has it" in page
    assert "<code>web7</code>" in page
