"""Helpers for tests that need a registered front server sending signed install reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.test import Client
from django.urls import reverse

from ca.clock import utcnow
from ca.models import CertificateAuthority
from ca.pki import node_reports
from ca.pki.node_reports import InstalledCrl, Report, ReportOutcome
from ca.services.frontservers import authority_key_id

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response


def make_report(
    *,
    node: str,
    crls: Sequence[tuple[CertificateAuthority, int]] = (),
    extra: Sequence[InstalledCrl] = (),
    when: dt.datetime | None = None,
    nonce: str | None = None,
    outcome: ReportOutcome = ReportOutcome.INSTALLED,
    error: str = "",
    interval: float = 2,
    heartbeat: float = 20,
) -> Report:
    return Report(
        node=node,
        timestamp=int((when or utcnow()).timestamp()),
        nonce=nonce or node_reports.new_nonce(),
        interval=interval,
        heartbeat=heartbeat,
        outcome=outcome,
        error=error,
        crls=tuple(InstalledCrl(authority_key_id(ca), number) for ca, number in crls) + tuple(extra),
    )


def signed(report: Report, token: str) -> tuple[bytes, str]:
    return node_reports.sign_report(report=report, key=node_reports.key_from_token(token))


def post_report(
    client: Client,
    body: bytes,
    signature: str | None,
    *,
    content_type: str = node_reports.CONTENT_TYPE,
) -> Response:
    headers = {node_reports.SIGNATURE_HEADER: signature} if signature is not None else {}
    # CONTENT_TYPE set explicitly too: the test client leaves it out for an empty body
    return client.post(
        reverse("ca:report"), data=body, content_type=content_type, headers=headers, CONTENT_TYPE=content_type
    )


def report_installed(
    client: Client,
    *,
    node: str,
    token: str,
    crls: Sequence[tuple[CertificateAuthority, int]],
    when: dt.datetime | None = None,
    outcome: ReportOutcome = ReportOutcome.INSTALLED,
    error: str = "",
    interval: float = 2,
    heartbeat: float = 20,
) -> Response:
    """Send a signed report that ``node`` installed ``crls``; the response must be 200."""
    report = make_report(
        node=node, crls=crls, when=when, outcome=outcome, error=error, interval=interval, heartbeat=heartbeat
    )
    body, signature = signed(report, token)
    response = post_report(client, body, signature)
    assert response.status_code == 200, response.content
    return response
