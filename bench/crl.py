"""CRL figures: per size, the raw build and raw carry-over beside the portal's full build, republish and
revocation to served CRL (time, and peak memory measured in a forked child)."""

from __future__ import annotations

import datetime as dt
import time

from cryptography import x509
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from bench.common import Output, at_most, certificates, emit, fill_revocations, in_child, timed
from ca.clock import utcnow
from ca.models import CertificateAuthority, CrlPublication, Revocation, RevocationReason
from ca.pki import crl as pki_crl
from ca.pki.serials import new_serial
from ca.services import authorities, keys, revocation
from ca.services import crl as ca_crl

#: Targets of issue 6 ("Speed"): CRL republish with the database read, by number of entries.
REPUBLISH_SECONDS = {100_000: 1.0, 1_000_000: 12.0}
REPUBLISH_PEAK_MIB = {1_000_000: 1024.0}
REVOCATION_TO_SERVED_SECONDS = {100_000: 1.5}


def _raw_entries(count: int, now: dt.datetime) -> list[pki_crl.CrlEntry]:
    return [
        pki_crl.CrlEntry(serial=new_serial(), revoked_at=now, reason=x509.ReasonFlags.superseded)
        for _ in range(count)
    ]


def bench_crl(out: Output, sizes: list[int]) -> None:
    """Per size: raw build and raw carry-over beside the portal's full build, republish and revocation."""
    now = utcnow()
    ca = authorities.create_ca(name="Bench CRL CA", slug="bench-crl", make_default=False)
    owner = User.objects.create_user("bench-crl-owner")
    backend = keys.key_backend(ca)
    database = connection.vendor
    for size in sorted(sizes):
        fill_revocations(ca, owner, size, now)

        def raw_build(size: int = size) -> None:
            pki_crl.build_crl_der(
                issuer=ca.certificate,
                backend=backend,
                number=1,
                this_update=now,
                next_update=now + dt.timedelta(days=7),
                entries=_raw_entries(size, now),
            )

        raw_full, raw_full_peak = in_child(timed(raw_build))
        emit(
            out,
            figure="crl_build_raw_cryptography",
            entries=size,
            seconds=round(raw_full, 3),
            peak_rss_mib=round(raw_full_peak / 1024, 1),
        )

        # No previous CRL: every entry is read from the database and built.
        CrlPublication.objects.filter(ca=ca).delete()
        full, full_peak = in_child(timed(lambda: ca_crl.publish_crl(ca=ca)))
        emit(
            out,
            figure="crl_publish_full_build",
            database=database,
            entries=size,
            seconds=round(full, 3),
            peak_rss_mib=round(full_peak / 1024, 1),
            raw_seconds=round(raw_full, 3),
        )

        previous_der = bytes(CrlPublication.objects.filter(ca=ca).latest().der)

        def raw_carry_over(previous_der: bytes = previous_der) -> None:
            base = pki_crl.previous_crl(issuer=ca.certificate, previous_der=previous_der)
            pki_crl.build_crl_der(
                issuer=ca.certificate,
                backend=backend,
                number=2,
                this_update=now,
                next_update=now + dt.timedelta(days=7),
                entries=_raw_entries(1, now),
                carried_over=base.entries,
            )

        raw_carry, raw_carry_peak = in_child(timed(raw_carry_over))
        del previous_der
        emit(
            out,
            figure="crl_carry_over_raw_cryptography",
            entries=size + 1,
            seconds=round(raw_carry, 3),
            peak_rss_mib=round(raw_carry_peak / 1024, 1),
        )

        # One revocation since the CRL (recorded, its CRL not yet signed): the everyday republish.
        Revocation.objects.create(
            certificate=certificates(ca, owner, 1, now)[0],
            reason=RevocationReason.KEY_COMPROMISE,
            revoked_at=utcnow(),
        )
        seconds, peak = in_child(timed(lambda: ca_crl.publish_crl(ca=ca)))
        peak_mib = peak / 1024
        limits = at_most(seconds, REPUBLISH_SECONDS.get(size), "s")
        memory = at_most(peak_mib, REPUBLISH_PEAK_MIB.get(size), "MiB")
        emit(
            out,
            figure="crl_republish",
            database=database,
            entries=size + 1,
            seconds=round(seconds, 3),
            peak_rss_mib=round(peak_mib, 1),
            raw_seconds=round(raw_carry, 3),
            **limits,
            **({"memory_target": memory["target"], "memory_pass": memory["pass"]} if memory else {}),
        )
        bench_revocation_to_served(out, ca=ca, owner=owner, size=size, now=now)


def bench_revocation_to_served(
    out: Output, *, ca: CertificateAuthority, owner: User, size: int, now: dt.datetime
) -> None:
    """From revoke_certificate (commit, then the CRL signed on commit) to the endpoint serving it."""
    certificate = certificates(ca, owner, 1, now)[0]
    client = Client()
    url = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    client.get(url)  # the endpoint has served the CRL before: its bytes are in this process's cache
    started = time.perf_counter()
    revocation.revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)
    response = client.get(url)
    seconds = time.perf_counter() - started
    listed = x509.load_der_x509_crl(response.content).get_revoked_certificate_by_serial_number(
        certificate.serial_int
    )
    emit(
        out,
        figure="revocation_to_served",
        database=connection.vendor,
        entries=size + 2,
        seconds=round(seconds, 3),
        served_status=response.status_code,
        listed=listed is not None,
        **at_most(seconds, REVOCATION_TO_SERVED_SECONDS.get(size), "s"),
    )
