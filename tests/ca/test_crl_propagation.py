"""Which registered front server has installed which CRL (signed reports only), shown as colors and JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import DjangoAssertNumQueries

from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.pki.node_reports import ReportOutcome
from ca.services import frontservers
from ca.services.authorities import create_ca
from ca.services.crl import current_crl, publish_crl
from ca.services.propagation import MARGIN, CrlColor, NodeState, crl_health, crl_healths
from ca.services.revocation import revoke_certificate
from tests.ca.reporting import report_installed

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def register(name: str, ca: CertificateAuthority) -> str:
    return frontservers.register(name=name, cas=[ca], actor="test")[1]


def test_the_summary_says_who_has_the_newest_crl_and_who_lags(
    frozen: time_machine.Traveller,
    client: Client,
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
) -> None:
    certificate = issue_for(alice)
    tokens = {name: register(name, ca) for name in ("web1", "web2", "web3")}
    old = publish_crl(ca=ca).number
    for name, token in tokens.items():
        report_installed(client, node=name, token=token, crls=[(ca, old)])
    frozen.shift(dt.timedelta(seconds=5))
    revoke_certificate(certificate=certificate, reason=RevocationReason.SUPERSEDED)
    new = current_crl(ca=ca).number
    report_installed(client, node="web1", token=tokens["web1"], crls=[(ca, new)])
    report_installed(client, node="web2", token=tokens["web2"], crls=[(ca, new)])

    health = crl_health(ca=ca)

    assert new > old
    assert health.summary == f"CRL #{new}: web1, web2 have it; web3 is catching up (#{old} since 10:00)"
    assert [n.current for n in health.nodes] == [True, True, False]
    assert [n.color for n in health.nodes] == [CrlColor.GREEN, CrlColor.GREEN, CrlColor.AMBER]


def test_a_node_behind_within_its_interval_and_the_margin_is_amber_beyond_it_red(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority
) -> None:
    token = register("web1", ca)
    old = current_crl(ca=ca).number
    new = publish_crl(ca=ca).number
    report_installed(client, node="web1", token=token, crls=[(ca, old)], interval=30, heartbeat=60)

    frozen.shift(dt.timedelta(seconds=30 + MARGIN - 1))
    (node,) = crl_health(ca=ca).nodes
    assert (node.color, node.state) == (CrlColor.AMBER, NodeState.CATCHING_UP)

    frozen.shift(dt.timedelta(seconds=2))
    (node,) = crl_health(ca=ca).nodes
    assert (node.color, node.state) == (CrlColor.RED, NodeState.LATE)

    report_installed(client, node="web1", token=token, crls=[(ca, new)], interval=30, heartbeat=60)
    (node,) = crl_health(ca=ca).nodes
    assert (node.color, node.state, node.number) == (CrlColor.GREEN, NodeState.CURRENT, new)


def test_a_node_silent_for_more_than_two_heartbeats_is_red(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority
) -> None:
    token = register("web1", ca)
    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number)], heartbeat=20)
    frozen.shift(dt.timedelta(seconds=40))
    assert crl_health(ca=ca).nodes[0].color is CrlColor.GREEN

    frozen.shift(dt.timedelta(seconds=1))

    (node,) = crl_health(ca=ca).nodes
    assert (node.color, node.state) == (CrlColor.RED, NodeState.SILENT)


def test_a_node_that_never_reported_or_holds_no_crl_of_the_ca_is_red(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority
) -> None:
    register("web1", ca)
    token = register("web2", ca)
    report_installed(client, node="web2", token=token, crls=[])

    states = {n.node: (n.color, n.state) for n in crl_health(ca=ca).nodes}

    assert states == {
        "web1": (CrlColor.RED, NodeState.NEVER_REPORTED),
        "web2": (CrlColor.RED, NodeState.MISSING),
    }


def test_only_nodes_registered_for_a_ca_are_shown_for_it(
    frozen: time_machine.Traveller, ca: CertificateAuthority
) -> None:
    other = create_ca(name="Other", slug="other", make_default=False)
    register("web1", ca)
    register("web2", other)

    by_ca = {h.ca.slug: [n.node for n in h.nodes] for h in crl_healths()}

    assert by_ca == {ca.slug: ["web1"], "other": ["web2"]}


def test_the_health_endpoint_reports_every_ca_with_seconds_left(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority
) -> None:
    token = register("web1", ca)
    number = current_crl(ca=ca).number
    report_installed(client, node="web1", token=token, crls=[(ca, number)], interval=2, heartbeat=20)
    frozen.shift(dt.timedelta(seconds=3))

    response = client.get("/pki/health.json")

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-cache"
    data = response.json()
    assert data["ok"] is True
    (entry,) = data["authorities"]
    assert entry["slug"] == ca.slug
    assert entry["crl_number"] == number
    assert entry["colour"] == "green"
    assert 0 < entry["seconds_left"] <= 7 * 24 * 3600
    assert entry["nodes"] == [
        {
            "node": "web1",
            "crl_number": number,
            "colour": "green",
            "state": "current",
            "installed_seconds_ago": 3,
            "last_report_seconds_ago": 3,
            "interval": 2.0,
            "heartbeat": 20.0,
        }
    ]


def test_the_health_endpoint_answers_503_unless_everything_is_green(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority
) -> None:
    assert client.get("/pki/health.json").status_code == 200  # no node registered, a fresh CRL
    register("web1", ca)

    response = client.get("/pki/health.json")

    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert response.json()["authorities"][0]["nodes"][0]["state"] == "never_reported"


def test_a_failed_node_is_red_with_its_error_for_staff_only(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, admin_user: User
) -> None:
    token = register("web1", ca)
    report_installed(
        client,
        node="web1",
        token=token,
        crls=[(ca, current_crl(ca=ca).number)],
        outcome=ReportOutcome.FAILED,
        error="nginx -s reload: exit status 1",
    )

    anonymous = client.get("/pki/health.json")
    staff = Client()
    staff.force_login(admin_user)
    seen_by_staff = staff.get("/pki/health.json")

    assert anonymous.status_code == seen_by_staff.status_code == 503
    (node,) = anonymous.json()["authorities"][0]["nodes"]
    assert (node["colour"], node["state"]) == ("red", "failed")
    assert "error" not in node
    assert b"nginx -s reload" not in anonymous.content
    assert seen_by_staff.json()["authorities"][0]["nodes"][0]["error"] == "nginx -s reload: exit status 1"


def test_the_health_endpoint_takes_a_few_queries_whatever_the_number_of_nodes(
    frozen: time_machine.Traveller,
    client: Client,
    ca: CertificateAuthority,
    django_assert_max_num_queries: DjangoAssertNumQueries,
) -> None:
    other = create_ca(name="Other", slug="other", make_default=False)
    for i in range(6):
        token = frontservers.register(name=f"web{i}", cas=[ca, other], actor="test")[1]
        report_installed(client, node=f"web{i}", token=token, crls=[(ca, current_crl(ca=ca).number)])

    with django_assert_max_num_queries(8):
        response = client.get("/pki/health.json")

    assert len(response.json()["authorities"][1]["nodes"]) == 6
