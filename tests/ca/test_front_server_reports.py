"""Registered front servers and their signed install reports: what is accepted, what is refused (and then
changes nothing), and that nothing else counts as evidence that a front server has a CRL."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ca.errors import CAError
from ca.models import (
    AuditEntry,
    AuditEvent,
    CertificateAuthority,
    CrlPublication,
    FrontServer,
    FrontServerCrl,
    FrontServerOutcome,
    ReportNonce,
)
from ca.pki import node_reports
from ca.pki.node_reports import InstalledCrl, ReportOutcome
from ca.services import frontservers
from ca.services.authorities import create_ca
from ca.services.crl import clock_floor, current_crl, next_crl_number, publish_crl
from tests.ca.reporting import make_report, post_report, report_installed, signed

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def token(ca: CertificateAuthority) -> str:
    return frontservers.register(name="web1", cas=[ca], actor="test")[1]


def rows() -> tuple[list[dict[str, Any]], ...]:
    """Every row a report may write, to compare before and after."""
    return (
        [{**r, "public_key": bytes(r["public_key"])} for r in FrontServer.objects.order_by("pk").values()],
        [dict(r) for r in FrontServerCrl.objects.order_by("pk").values()],
        [dict(r) for r in ReportNonce.objects.order_by("pk").values()],
        [dict(r) for r in CrlPublication.objects.order_by("pk").values("pk", "number")],
    )


# --- accepted ---------------------------------------------------------------------------------------


def test_an_accepted_report_records_what_the_node_installed(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    number = current_crl(ca=ca).number
    body, signature = signed(make_report(node="web1", crls=[(ca, number)], interval=2.5, heartbeat=30), token)

    response = post_report(client, body, signature)

    assert response.status_code == 200
    assert response.content == b"accepted\n"
    assert response["Content-Type"].startswith("text/plain")
    server = FrontServer.objects.get(name="web1")
    assert (server.last_report_at, server.last_outcome, server.last_error) == (
        T0,
        FrontServerOutcome.INSTALLED,
        "",
    )
    assert (server.interval, server.heartbeat) == (2.5, 30.0)
    installed = FrontServerCrl.objects.get(front_server=server, ca=ca)
    assert (installed.number, installed.installed_at, installed.reported_at) == (number, T0, T0)
    assert ReportNonce.objects.filter(front_server=server).count() == 1


def test_installed_at_moves_only_when_the_number_changes(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    old = current_crl(ca=ca).number
    report_installed(client, node="web1", token=token, crls=[(ca, old)])
    frozen.shift(dt.timedelta(seconds=60))
    report_installed(client, node="web1", token=token, crls=[(ca, old)], outcome=ReportOutcome.UNCHANGED)
    row = FrontServerCrl.objects.get(ca=ca)
    assert (row.installed_at, row.reported_at) == (T0, T0 + dt.timedelta(seconds=60))

    new = publish_crl(ca=ca).number
    frozen.shift(dt.timedelta(seconds=60))
    report_installed(client, node="web1", token=token, crls=[(ca, new)])

    row.refresh_from_db()
    assert (row.number, row.installed_at) == (new, T0 + dt.timedelta(seconds=120))


def test_entries_for_cas_the_node_does_not_carry_are_ignored(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    other = create_ca(name="Other", slug="other", make_default=False)
    stranger = InstalledCrl("ab" * 20, 10**12)

    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number), (other, 99)])
    body, signature = signed(make_report(node="web1", extra=[stranger]), token)
    assert post_report(client, body, signature).status_code == 200

    assert [(r.ca_id, r.number) for r in FrontServerCrl.objects.all()] == [(ca.pk, current_crl(ca=ca).number)]


def test_a_failed_run_keeps_its_error(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    report_installed(
        client, node="web1", token=token, crls=[], outcome=ReportOutcome.FAILED, error="disk full"
    )

    server = FrontServer.objects.get(name="web1")
    assert (server.last_outcome, server.last_error) == (FrontServerOutcome.FAILED, "disk full")


def test_old_nonces_are_deleted_as_reports_arrive(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    report_installed(client, node="web1", token=token, crls=[])
    frozen.shift(frontservers.NONCE_KEPT + dt.timedelta(seconds=1))

    report_installed(client, node="web1", token=token, crls=[])

    assert list(ReportNonce.objects.values_list("seen_at", flat=True)) == [
        T0 + frontservers.NONCE_KEPT + dt.timedelta(seconds=1)
    ]


# --- refused, and then nothing changes --------------------------------------------------------------


def test_a_report_from_an_unknown_node_is_refused_and_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    stranger = node_reports.token_for(node_reports.new_node_key())
    body, signature = signed(make_report(node="web9", crls=[(ca, 10**12)]), stranger)
    before = rows()

    response = post_report(client, body, signature)

    assert response.status_code == 403
    assert b"No front server named 'web9' is registered" in response.content
    assert rows() == before


def test_a_report_with_a_bad_signature_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    other_key = node_reports.token_for(node_reports.new_node_key())
    body, signature = signed(make_report(node="web1", crls=[(ca, 10**12)]), other_key)
    before = rows()

    response = post_report(client, body, signature)

    assert response.status_code == 403
    assert b"signature does not match" in response.content
    assert rows() == before


@pytest.mark.parametrize("signature", [None, "", "not base64!", "AAAA"])
def test_a_report_without_a_usable_signature_changes_nothing(
    frozen: time_machine.Traveller,
    client: Client,
    ca: CertificateAuthority,
    token: str,
    signature: str | None,
) -> None:
    body, _ = signed(make_report(node="web1", crls=[(ca, 10**12)]), token)
    before = rows()

    assert post_report(client, body, signature).status_code == 403
    assert rows() == before


def test_a_tampered_report_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    body, signature = signed(make_report(node="web1", crls=[(ca, 5)]), token)
    tampered = body.replace(b'"number":5', b'"number":9')
    assert tampered != body
    before = rows()

    assert post_report(client, tampered, signature).status_code == 403
    assert rows() == before


@pytest.mark.parametrize(
    ("offset", "words"), [(-121, b"121 s behind"), (121, b"121 s ahead of"), (-3600, b"3600 s behind")]
)
def test_a_stale_or_future_report_is_refused_saying_by_how_much(
    frozen: time_machine.Traveller,
    client: Client,
    ca: CertificateAuthority,
    token: str,
    offset: int,
    words: bytes,
) -> None:
    when = T0 + dt.timedelta(seconds=offset)
    body, signature = signed(make_report(node="web1", crls=[(ca, 10**12)], when=when), token)
    before = rows()

    response = post_report(client, body, signature)

    assert response.status_code == 400
    assert words in response.content
    assert rows() == before


def test_a_report_within_the_clock_skew_is_accepted(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    for offset in (-120, 120):
        report_installed(client, node="web1", token=token, crls=[], when=T0 + dt.timedelta(seconds=offset))


def test_a_replayed_report_is_refused_and_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    body, signature = signed(make_report(node="web1", crls=[(ca, current_crl(ca=ca).number)]), token)
    assert post_report(client, body, signature).status_code == 200
    frozen.shift(dt.timedelta(seconds=30))
    before = rows()

    response = post_report(client, body, signature)

    assert response.status_code == 409
    assert b"received already" in response.content
    assert rows() == before


def test_an_older_report_arriving_after_a_newer_one_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    number = current_crl(ca=ca).number
    older = signed(make_report(node="web1", crls=[(ca, number)], when=T0), token)
    newer = signed(
        make_report(node="web1", crls=[(ca, number + 1)], when=T0 + dt.timedelta(seconds=5)), token
    )
    frozen.shift(dt.timedelta(seconds=10))
    assert post_report(client, *newer).status_code == 200
    before = rows()

    response = post_report(client, *older)

    assert response.status_code == 409
    assert b"older than the last one accepted" in response.content
    assert rows() == before
    assert FrontServerCrl.objects.get(front_server__name="web1", ca=ca).number == number + 1


def test_a_nonce_stored_by_a_concurrent_report_after_the_checks_is_a_replay_too(
    frozen: time_machine.Traveller, ca: CertificateAuthority, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, signature = signed(make_report(node="web1", crls=[(ca, 10**12)]), token)
    checked = frontservers._checked

    def racing(**kwargs: Any) -> Any:
        report, server = checked(**kwargs)
        ReportNonce.objects.create(front_server=server, nonce=report.nonce, seen_at=T0)  # the other one
        return report, server

    monkeypatch.setattr(frontservers, "_checked", racing)

    with pytest.raises(frontservers.ReportRefused) as refused:
        frontservers.accept_report(body=body, signature=signature)

    assert refused.value.problem is frontservers.Refusal.REPLAYED
    assert FrontServer.objects.get(name="web1").last_report_at is None
    assert not FrontServerCrl.objects.exists()


def _valid() -> dict[str, Any]:
    return {
        "type": "enroll-crl-report/1",
        "node": "web1",
        "timestamp": int(T0.timestamp()),
        "nonce": "0" * 32,
        "interval": 2,
        "heartbeat": 20,
        "outcome": "installed",
        "error": "",
        "crls": [],
    }


MALFORMED = {
    "empty": b"",
    "not JSON": b"{not json",
    "not UTF-8": b'{"type": "\xff"}',
    "a list": b"[]",
    "wrong type": json.dumps({**_valid(), "type": "enroll-crl-report/2"}).encode(),
    "bad node name": json.dumps({**_valid(), "node": "web 1"}).encode(),
    "timestamp as text": json.dumps({**_valid(), "timestamp": "now"}).encode(),
    "short nonce": json.dumps({**_valid(), "nonce": "abc"}).encode(),
    "unknown outcome": json.dumps({**_valid(), "outcome": "maybe"}).encode(),
    "negative interval": json.dumps({**_valid(), "interval": -1}).encode(),
    "crls not a list": json.dumps({**_valid(), "crls": {}}).encode(),
    "upper-case key id": json.dumps({**_valid(), "crls": [{"authority_key_id": "AB", "number": 1}]}).encode(),
    "negative number": json.dumps({**_valid(), "crls": [{"authority_key_id": "ab", "number": -1}]}).encode(),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_report_is_refused_and_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str, body: bytes
) -> None:
    body = body[: node_reports.MAX_REPORT_BYTES]
    # signed with the node's key, so that only the body's form is wrong
    signature = base64.b64encode(node_reports.key_from_token(token).sign(body)).decode()
    before = rows()

    response = post_report(client, body, signature)

    assert response.status_code == 400
    assert rows() == before


def test_a_signed_report_with_a_crl_number_too_large_to_be_ours_changes_nothing(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    body, signature = signed(make_report(node="web1", crls=[(ca, 2**100)]), token)
    before = rows()

    assert post_report(client, body, signature).status_code == 400
    assert rows() == before


def test_a_report_too_large_is_refused_with_413(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    before = rows()

    response = post_report(client, b" " * (node_reports.MAX_REPORT_BYTES + 1), "AAAA")

    assert response.status_code == 413
    assert rows() == before


def test_a_report_that_is_not_json_is_refused_with_415(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    body, signature = signed(make_report(node="web1", crls=[(ca, 10**12)]), token)
    before = rows()

    response = post_report(client, body, signature, content_type="text/plain")

    assert response.status_code == 415
    assert b"application/json" in response.content
    assert rows() == before


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_the_report_url_takes_only_post(client: Client, db: None, method: str) -> None:
    assert getattr(client, method)(reverse("ca:report")).status_code == 405


def test_reports_need_no_csrf_token_and_stay_on_plain_http(
    frozen: time_machine.Traveller, ca: CertificateAuthority, token: str, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^pki/"]
    client = Client(enforce_csrf_checks=True)

    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number)])


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=2048), signature=st.text(max_size=100))
def test_arbitrary_bytes_never_give_a_server_error_and_change_nothing(
    client: Client, ca: CertificateAuthority, token: str, body: bytes, signature: str
) -> None:
    before = rows()

    response = post_report(client, body, signature.encode("ascii", "ignore").decode())

    assert response.status_code in (400, 403)
    assert rows() == before


# --- nothing else is evidence -----------------------------------------------------------------------


def test_an_anonymous_crl_download_naming_a_node_records_nothing(
    client: Client, ca: CertificateAuthority, token: str
) -> None:
    before = rows()

    response = client.get(reverse("ca:crl-pem", kwargs={"slug": ca.slug}), headers={"X-Enroll-Node": "web1"})

    assert response.status_code == 200
    assert rows() == before


def test_the_next_crl_number_counts_only_authenticated_reports(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    latest = current_crl(ca=ca).number
    huge = clock_floor(T0) + 10**9
    stranger = node_reports.token_for(node_reports.new_node_key())
    body, signature = signed(make_report(node="web1", crls=[(ca, huge)]), stranger)
    assert post_report(client, body, signature).status_code == 403
    body, signature = signed(make_report(node="web2", crls=[(ca, huge)]), stranger)
    assert post_report(client, body, signature).status_code == 403
    client.get(reverse("ca:crl-der", kwargs={"slug": ca.slug}), headers={"X-Enroll-Node": "web1"})

    assert next_crl_number(ca=ca, latest=latest, now=T0) == max(latest + 1, clock_floor(T0))

    report_installed(client, node="web1", token=token, crls=[(ca, huge)])

    assert next_crl_number(ca=ca, latest=latest, now=T0) == huge + 1


def test_after_a_restore_new_crls_stay_above_what_nodes_reported(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    backup = current_crl(ca=ca).number
    for _ in range(4):
        publish_crl(ca=ca)
    reported = current_crl(ca=ca).number
    report_installed(client, node="web1", token=token, crls=[(ca, reported)])
    CrlPublication.objects.filter(ca=ca, number__gt=backup).delete()  # the restore

    assert publish_crl(ca=ca).number > reported


# --- registration, rotation, removal ----------------------------------------------------------------


def test_registering_defaults_to_the_default_cas_chain_and_is_audited(db: None) -> None:
    root = create_ca(name="Root", slug="root", make_default=False)
    issuing = create_ca(name="Issuing", slug="issuing", parent=root, make_default=True)

    server, token = frontservers.register(name="web1", actor="alice")

    assert set(server.cas.all()) == {issuing, root}
    assert bytes(server.public_key) == node_reports.public_key_bytes(node_reports.key_from_token(token))
    assert token not in str(list(FrontServer.objects.values()))
    entry = AuditEntry.objects.get(event=AuditEvent.FRONT_SERVER_REGISTERED)
    assert "web1" in entry.detail
    assert "alice" in entry.detail


@pytest.mark.parametrize("name", ["", "-web", "web 1", "a" * 65, "wéb", "web1;drop"])
def test_a_malformed_name_is_refused_in_plain_words(ca: CertificateAuthority, name: str) -> None:
    with pytest.raises(CAError, match="cannot be a front server's name"):
        frontservers.register(name=name, actor="test")
    assert not FrontServer.objects.exists()


def test_a_duplicate_name_is_refused(ca: CertificateAuthority, token: str) -> None:
    with pytest.raises(CAError, match="registered already"):
        frontservers.register(name="web1", actor="test")
    assert FrontServer.objects.count() == 1


def test_rotating_makes_the_old_token_fail_at_once(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    new_token = frontservers.rotate(name="web1", actor="test")

    body, signature = signed(make_report(node="web1", crls=[]), token)
    assert post_report(client, body, signature).status_code == 403
    report_installed(client, node="web1", token=new_token, crls=[])
    assert FrontServer.objects.get(name="web1").key_rotated_at == T0
    assert AuditEntry.objects.filter(event=AuditEvent.FRONT_SERVER_KEY_ROTATED).count() == 1


def test_a_removed_node_is_forgotten_and_its_reports_refused(
    frozen: time_machine.Traveller, client: Client, ca: CertificateAuthority, token: str
) -> None:
    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number)])

    frontservers.remove(name="web1", actor="test")

    assert not FrontServer.objects.exists()
    assert not FrontServerCrl.objects.exists()
    body, signature = signed(make_report(node="web1", crls=[]), token)
    assert post_report(client, body, signature).status_code == 403
    assert AuditEntry.objects.filter(event=AuditEvent.FRONT_SERVER_REMOVED).count() == 1
    with pytest.raises(CAError, match="There is no front server named 'web1'"):
        frontservers.remove(name="web1", actor="test")
