"""Issuance figures on a P-256 CA: raw signing (the core's path: a throwaway-key draft, the key backend
signs the TBS bytes, the result verified), bulk approval (``flows.approve_many``)
with pre-signing lint on and off, single approvals per second, and approvals per second through the
admin's Approve and next (the POST and the next request's page, in process through Django's test client)."""

from __future__ import annotations

import datetime as dt
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from bench.common import Output, emit
from ca.clock import utcnow
from ca.pki.profiles import SubjectInfo, build_client_certificate, get_profile, validity_window
from ca.pki.serials import new_serial
from ca.services import authorities, keys
from enroll import flows
from enroll.models import EnrollmentRequest


def _submitted(owner: User, private_keys: list[ec.EllipticCurvePrivateKey]) -> list[int]:
    csrs = [
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(private_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
        for private_key in private_keys
    ]
    return [flows.submit_csr(owner=owner, data=csr).pk for csr in csrs]


def bench_issuance(out: Output, count: int, single: int) -> float | None:
    """The issuance figures; returns the single approvals per second (None when ``single`` is 0)."""
    ca = authorities.create_ca(name="Bench Issuing CA", slug="bench-issuing", make_default=True)
    backend = keys.key_backend(ca)
    owner = User.objects.create_user("bench-user", "bench@example.com")
    admin = User.objects.create_superuser("bench-admin", "bench-admin@example.com", "not-used")
    private_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2 * count + 2 * single)]

    now = utcnow()
    not_before, not_after = validity_window(now=now, validity=dt.timedelta(days=365), issuer=ca.certificate)
    started = time.perf_counter()
    for private_key in private_keys[:count]:
        build_client_certificate(
            profile=get_profile(name="client"),
            public_key=private_key.public_key(),
            subject=SubjectInfo(common_name="bench-user", email="bench@example.com"),
            issuer=ca.certificate,
            backend=backend,
            serial=new_serial(),
            not_before=not_before,
            not_after=not_after,
            urls=ca.urls,
        ).public_bytes(serialization.Encoding.DER)
    raw = count / (time.perf_counter() - started) if count else None  # --issue 0: no raw figure
    if raw is not None:
        emit(
            out,
            figure="issue_raw_cryptography",
            ca_key="ec-p256",
            certificates=count,
            per_second=round(raw, 1),
        )

    bulk = ((True, private_keys[:count]), (False, private_keys[count : 2 * count])) if count else ()
    for lint, batch in bulk:  # --issue 0: single approvals only
        request_ids = _submitted(owner, batch)
        with override_settings(ENROLL_LINT_BEFORE_SIGN=lint):
            started = time.perf_counter()
            results = flows.approve_many(request_ids=request_ids, actor=admin)
            seconds = time.perf_counter() - started
        issued = sum(result.outcome == flows.ApprovalOutcome.ISSUED for result in results)
        emit(
            out,
            figure="issue_bulk_approval",
            database=connection.vendor,
            ca_key="ec-p256",
            lint=lint,
            requests=count,
            issued=issued,
            seconds=round(seconds, 3),
            per_second=round(count / seconds, 1),
            raw_per_second=round(raw, 1) if raw else None,
            share_of_raw=round(count / seconds / raw, 3) if raw else None,
        )

    if single:
        request_ids = _submitted(owner, private_keys[2 * count : 2 * count + single])
        started = time.perf_counter()
        for request_id in request_ids:
            flows.approve(request_id=request_id, by=admin)
        rate = single / (time.perf_counter() - started)
        emit(
            out,
            figure="issue_single_approvals",
            database=connection.vendor,
            ca_key="ec-p256",
            lint=bool(settings.ENROLL_LINT_BEFORE_SIGN),
            requests=single,
            per_second=round(rate, 1),
            raw_per_second=round(raw, 1) if raw else None,
            share_of_raw=round(rate / raw, 3) if raw else None,
        )
        bench_approve_and_next(out, owner, admin, private_keys[2 * count + single :], single_rate=rate)
        return rate
    return None


def bench_approve_and_next(
    out: Output,
    owner: User,
    admin: User,
    private_keys: list[ec.EllipticCurvePrivateKey],
    *,
    single_rate: float,
) -> None:
    """An approver clearing the queue in the admin: each step POSTs Approve and next and GETs the page it
    leads to (the next request, with its context, or the list when the queue is empty)."""
    request_ids = _submitted(owner, private_keys)
    client = Client()
    client.force_login(admin)
    with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
        started = time.perf_counter()
        for request_id in request_ids:
            approve = reverse("admin:enroll_enrollmentrequest_approve", args=[request_id])
            response = client.post(approve, {"_next": "1"}, secure=True)
            assert response.status_code == 302, response.status_code
            assert client.get(response["Location"], secure=True).status_code == 200
        seconds = time.perf_counter() - started
    issued = EnrollmentRequest.objects.filter(pk__in=request_ids, certificate__isnull=False).count()
    emit(
        out,
        figure="issue_approve_and_next",
        database=connection.vendor,
        ca_key="ec-p256",
        lint=bool(settings.ENROLL_LINT_BEFORE_SIGN),
        requests=len(request_ids),
        issued=issued,
        per_second=round(len(request_ids) / seconds, 1),
        single_approvals_per_second=round(single_rate, 1),
        share_of_single=round(len(request_ids) / seconds / single_rate, 3),
    )
