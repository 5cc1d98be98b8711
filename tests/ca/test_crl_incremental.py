"""The next CRL carries the previous one's entries over: same entries as a full build, never a lower number.

publish_crl reads only the revocations since the previous CRL and the entries to drop, and reuses the
previous CRL's signed entries; it builds from every revocation when the previous CRL cannot be reused.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db.models.signals import post_delete, post_save
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django import DjangoAssertNumQueries
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings

from ca.models import (
    Certificate,
    CertificateAuthority,
    CrlPublication,
    Revocation,
    RevocationReason,
)
from ca.pki import crl as pki_crl
from ca.pki.serials import format_serial, new_serial
from ca.pki.signing import PrivateKeyBackend
from ca.services import crl_serving, frontservers
from ca.services.authorities import create_ca
from ca.services.crl import CARRY_OVER_SLACK, clock_floor, crl_lifetime, publish_crl
from ca.services.keys import key_backend
from ca.services.revocation import revoke_certificate
from tests.ca.reporting import report_installed
from tests.conftest import signed_by

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
CARRIED = "carried over"
NOT_CARRIED = "is not carried over"

#: (serial, revocation date, reason or None, invalidity date or None), as a CRL entry says them.
Entry = tuple[int, dt.datetime, x509.ReasonFlags | None, dt.datetime | None]


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def certificate(ca: CertificateAuthority, *, days: float = 365) -> Certificate:
    """A certificate row of ``ca`` valid from now for ``days`` (the CRL needs only its serial and expiry)."""
    now = dt.datetime.now(tz=dt.UTC)
    return Certificate.objects.create(
        ca=ca,
        serial=format_serial(serial=new_serial()),
        der=b"\x30\x00",
        subject="CN=crl test",
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=days),
        owner=None,
        fingerprint_sha256=secrets.token_hex(32),
        spki_sha256=secrets.token_hex(32),
        profile="client",
        request_sha256="0" * 64,
        created_at=now,
    )


def revoke(
    cert: Certificate,
    reason: RevocationReason = RevocationReason.SUPERSEDED,
    *,
    invalidity_date: dt.datetime | None = None,
) -> None:
    revoke_certificate(certificate=cert, reason=reason, invalidity_date=invalidity_date)


def crl_entries(publication: CrlPublication) -> list[Entry]:
    crl = x509.load_der_x509_crl(bytes(publication.der))
    found: list[Entry] = []
    for revoked in crl:
        extensions = {type(ext.value): ext.value for ext in revoked.extensions}
        reason = extensions.get(x509.CRLReason)
        invalidity = extensions.get(x509.InvalidityDate)
        found.append(
            (
                revoked.serial_number,
                revoked.revocation_date_utc,
                reason.reason if isinstance(reason, x509.CRLReason) else None,
                invalidity.invalidity_date_utc if isinstance(invalidity, x509.InvalidityDate) else None,
            )
        )
    return sorted(found, key=lambda entry: entry[0])


def full_build_entries(ca: CertificateAuthority, publication: CrlPublication) -> list[Entry]:
    """The entries of a CRL built anew from every revocation, at the publication's thisUpdate."""
    cutoff = publication.this_update - crl_lifetime()
    rows = Revocation.objects.filter(certificate__ca=ca, certificate__not_after__gt=cutoff)
    entries = [
        pki_crl.CrlEntry(
            serial=int(row.certificate.serial, 16),
            revoked_at=row.revoked_at,
            reason=RevocationReason(row.reason).flag,
            invalidity_date=row.invalidity_date,
        )
        for row in rows.select_related("certificate")
    ]
    rebuilt = pki_crl.build_crl(
        issuer=ca.certificate,
        backend=key_backend(ca),
        number=publication.number,
        this_update=publication.this_update,
        next_update=publication.next_update,
        entries=entries,
    )
    der = rebuilt.public_bytes(serialization.Encoding.DER)
    return crl_entries(CrlPublication(der=der))


def carried_over(caplog: pytest.LogCaptureFixture) -> bool:
    return any(CARRIED in r.getMessage() and NOT_CARRIED not in r.getMessage() for r in caplog.records)


# --- same entries as a full build ----------------------------------------------------------------------

#: ("issue", days valid) | ("revoke", which, reason, with invalidity date) | ("wait", seconds)
#: | ("lifetime", CRL lifetime hours) | ("publish",)
Step = tuple[Any, ...]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.sampled_from([0.5, 2, 8, 365])),
        st.tuples(
            st.just("revoke"),
            st.integers(min_value=0, max_value=50),
            st.sampled_from(list(RevocationReason)),
            st.booleans(),
        ),
        st.tuples(st.just("wait"), st.sampled_from([0, 1, 600, 3600 * 12, 86400 * 3])),
        st.tuples(st.just("lifetime"), st.sampled_from([24, 168])),
        st.tuples(st.just("publish")),
    ),
    min_size=1,
    max_size=30,
)


@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=steps)
def test_after_any_revocations_and_expiries_the_crl_has_the_entries_of_a_full_build(
    script: list[Step], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.ENROLL_CRL_LIFETIME_HOURS = 168
    caplog.set_level(logging.INFO, logger="ca.services")
    with time_machine.travel(T0, tick=False) as clock:
        ca = create_ca(name="Property Root", days=3650, make_default=False)
        issued: list[Certificate] = [certificate(ca)]
        publications = 0
        carried = 0
        for step in [*script, ("publish",)]:
            match step:
                case ("issue", days):
                    issued.append(certificate(ca, days=days))
                case ("revoke", index, reason, compromised_earlier):
                    target = issued[index % len(issued)]
                    if not Revocation.objects.filter(certificate=target).exists():
                        when = dt.datetime.now(tz=dt.UTC) - dt.timedelta(hours=5)
                        revoke(target, reason, invalidity_date=when if compromised_earlier else None)
                case ("wait", seconds):
                    clock.shift(dt.timedelta(seconds=seconds))
                case ("lifetime", hours):
                    settings.ENROLL_CRL_LIFETIME_HOURS = hours
                case ("publish",):
                    caplog.clear()
                    publication = publish_crl(ca=ca)
                    publications += 1
                    carried += carried_over(caplog)
                    assert crl_entries(publication) == full_build_entries(ca, publication)
                    assert publication.entries == len(crl_entries(publication))
                    assert signed_by(x509.load_der_x509_crl(bytes(publication.der)), ca.certificate)
        assert publications >= 1
        assert carried >= 1, "the CRLs after the first one are carried over"


def test_a_crl_after_one_revocation_carries_the_others_over(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    earlier = [certificate(ca) for _ in range(20)]
    for cert in earlier:
        revoke(cert)
    publish_crl(ca=ca)
    latest = certificate(ca)
    revoke(latest, RevocationReason.KEY_COMPROMISE, invalidity_date=T0.replace(year=2020))
    caplog.set_level(logging.INFO, logger="ca.services")

    publication = publish_crl(ca=ca)

    assert "1 new, 20 carried over" in caplog.text
    assert crl_entries(publication) == full_build_entries(ca, publication)
    reasons = {serial: reason for serial, _date, reason, _invalidity in crl_entries(publication)}
    assert reasons[latest.serial_int] == x509.ReasonFlags.key_compromise


def test_a_certificate_that_expired_more_than_a_lifetime_ago_is_dropped_from_a_carried_over_crl(
    frozen: time_machine.Traveller, caplog: pytest.LogCaptureFixture
) -> None:
    ca = create_ca(name="Root")
    short, long = certificate(ca, days=1), certificate(ca)
    revoke(short)
    revoke(long)
    publish_crl(ca=ca)
    frozen.shift(dt.timedelta(days=1) + crl_lifetime() + dt.timedelta(seconds=1))
    caplog.set_level(logging.INFO, logger="ca.services")

    publication = publish_crl(ca=ca)

    assert "0 new, 1 carried over" in caplog.text
    assert [e[0] for e in crl_entries(publication)] == [long.serial_int]


def test_a_revocation_at_the_same_instant_as_the_crl_is_listed_once(
    frozen: time_machine.Traveller,
) -> None:
    ca = create_ca(name="Root")
    first, second = certificate(ca), certificate(ca)
    revoke(first)
    publish_crl(ca=ca)
    revoke(second)  # the clock stands still: revoked at the previous CRL's own read time

    publication = publish_crl(ca=ca)

    assert sorted(e[0] for e in crl_entries(publication)) == sorted([first.serial_int, second.serial_int])


# --- a previous CRL that cannot be carried over ----------------------------------------------------


def crl_of_another_ca(ca: CertificateAuthority, previous: CrlPublication) -> bytes:
    other = create_ca(name="Other", make_default=False)
    return bytes(publish_crl(ca=other).der)


def crl_signed_by_another_key_under_the_same_name(
    ca: CertificateAuthority, previous: CrlPublication
) -> bytes:
    """What a CA whose key was replaced (same name, same key identifier) signed before the change."""
    old_key = ec.generate_private_key(ec.SECP256R1())
    crl = pki_crl.build_crl(
        issuer=ca.certificate,  # name and authorityKeyIdentifier of this CA, signature of another key
        backend=PrivateKeyBackend(key=old_key),
        number=previous.number,
        this_update=previous.this_update,
        next_update=previous.next_update,
        entries=[],
    )
    return crl.public_bytes(serialization.Encoding.DER)


def crl_with_a_damaged_signature(ca: CertificateAuthority, previous: CrlPublication) -> bytes:
    der = bytearray(bytes(previous.der))
    der[-3] ^= 0x01
    return bytes(der)


def not_a_crl(ca: CertificateAuthority, previous: CrlPublication) -> bytes:
    return b"\x30\x03\x02\x01\x00"


def truncated_crl(ca: CertificateAuthority, previous: CrlPublication) -> bytes:
    return bytes(previous.der)[:-10]


@pytest.mark.parametrize(
    "replace_previous",
    [
        crl_of_another_ca,
        crl_signed_by_another_key_under_the_same_name,
        crl_with_a_damaged_signature,
        not_a_crl,
        truncated_crl,
    ],
)
def test_it_builds_from_every_revocation_when_the_previous_crl_is_unusable(
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
    replace_previous: Callable[[CertificateAuthority, CrlPublication], bytes],
) -> None:
    listed = [certificate(ca) for _ in range(3)]
    for cert in listed:
        revoke(cert)
    previous = publish_crl(ca=ca)
    CrlPublication.objects.filter(pk=previous.pk).update(der=replace_previous(ca, previous))
    newest = certificate(ca)
    revoke(newest)
    caplog.set_level(logging.INFO, logger="ca.services")

    publication = publish_crl(ca=ca)

    assert NOT_CARRIED in caplog.text
    assert "built from all revocations" in caplog.text
    assert {e[0] for e in crl_entries(publication)} == {c.serial_int for c in [*listed, newest]}
    assert signed_by(x509.load_der_x509_crl(bytes(publication.der)), ca.certificate)


def test_a_revocation_dated_long_before_the_crl_that_missed_it_makes_a_full_build(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    publish_crl(ca=ca)
    missed = certificate(ca)
    Revocation.objects.create(
        certificate=missed,
        reason=RevocationReason.SUPERSEDED,
        revoked_at=dt.datetime.now(tz=dt.UTC) - CARRY_OVER_SLACK - dt.timedelta(hours=1),
    )
    caplog.set_level(logging.INFO, logger="ca.services")

    publication = publish_crl(ca=ca)

    assert "would give 0 entries for 1 revocations" in caplog.text
    assert [e[0] for e in crl_entries(publication)] == [missed.serial_int]


def test_a_longer_lifetime_brings_back_entries_the_previous_crl_had_dropped(
    frozen: time_machine.Traveller, settings: Settings
) -> None:
    settings.ENROLL_CRL_LIFETIME_HOURS = 24
    ca = create_ca(name="Root")
    expired = certificate(ca, days=1)
    revoke(expired)
    frozen.shift(dt.timedelta(days=3))
    assert crl_entries(publish_crl(ca=ca)) == []
    settings.ENROLL_CRL_LIFETIME_HOURS = 24 * 7

    publication = publish_crl(ca=ca)

    assert [e[0] for e in crl_entries(publication)] == [expired.serial_int]


# --- CRL numbers never go backwards ----------------------------------------------------------------


def test_after_restoring_an_older_backup_the_next_number_is_above_every_number_installed(
    frozen: time_machine.Traveller, client: Client
) -> None:
    ca = create_ca(name="Root")
    _, token = frontservers.register(name="web1", cas=[ca], actor="test")
    backup_taken = CrlPublication.objects.filter(ca=ca).latest()
    for _ in range(5):  # a burst in one millisecond: the numbers run ahead of the clock
        publish_crl(ca=ca)
    served = client.get(reverse("ca:crl-der", kwargs={"slug": ca.slug}))
    highest_served = x509.load_der_x509_crl(served.content).extensions.get_extension_for_class(x509.CRLNumber)
    report_installed(client, node="web1", token=token, crls=[(ca, highest_served.value.crl_number)])
    # The restore: the CRL rows newer than the backup are gone; the clock moved on by a millisecond only.
    CrlPublication.objects.filter(ca=ca, number__gt=backup_taken.number).delete()
    frozen.shift(dt.timedelta(milliseconds=1))
    assert clock_floor(dt.datetime.now(tz=dt.UTC)) < highest_served.value.crl_number

    publication = publish_crl(ca=ca)

    assert publication.number > highest_served.value.crl_number


def test_a_restore_that_reuses_a_row_id_serves_the_new_bytes(
    ca: CertificateAuthority, client: Client
) -> None:
    """The endpoint's per-process cache is keyed by row id and SHA-256, so a re-used id is not confused."""
    url = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    first = client.get(url)
    publication = CrlPublication.objects.filter(ca=ca).latest()
    replacement = publish_crl(ca=ca)
    CrlPublication.objects.filter(pk__in=[publication.pk, replacement.pk]).delete()
    replacement.pk = publication.pk
    replacement.save(force_insert=True)

    again = client.get(url)

    assert again.content == bytes(replacement.der) != first.content


# --- the endpoint's hot path -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ca:crl-der", "ca:crl-pem"])
def test_a_fresh_crl_is_served_with_one_small_query_and_none_within_the_recheck_interval(
    ca: CertificateAuthority,
    client: Client,
    django_assert_num_queries: DjangoAssertNumQueries,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    url = reverse(name, kwargs={"slug": ca.slug})
    first = client.get(url)

    with django_assert_num_queries(0):
        cached = client.get(url)
        cached_304 = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    monkeypatch.setattr(crl_serving, "CRL_RECHECK_SECONDS", 0)
    with django_assert_num_queries(1):
        again = client.get(url)
    with django_assert_num_queries(1):
        unchanged = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])

    assert cached.content == again.content == first.content
    assert cached_304.status_code == unchanged.status_code == 304


@contextmanager
def as_another_process() -> Iterator[None]:
    """Writes in here do not reach this process's CRL bookkeeping (as if another process made them)."""
    receivers = [(post_save, Revocation), (post_delete, Revocation), (post_save, CrlPublication),
                 (post_delete, CrlPublication)]  # fmt: skip
    for signal, sender in receivers:
        assert signal.disconnect(crl_serving.forget_newest_crl, sender=sender, dispatch_uid=uid(sender))
    try:
        yield
    finally:
        for signal, sender in receivers:
            signal.connect(crl_serving.forget_newest_crl, sender=sender, dispatch_uid=uid(sender))


def uid(sender: type) -> str:
    return "ca.crl_serving.revocation" if sender is Revocation else "ca.crl_serving.crl"


def test_a_crl_signed_by_another_process_is_served_after_the_recheck_interval(
    ca: CertificateAuthority, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    first = client.get(url)
    with as_another_process():
        newer = publish_crl(ca=ca)

    within = client.get(url)
    monkeypatch.setattr(crl_serving, "CRL_RECHECK_SECONDS", 0)
    after = client.get(url)

    assert within.content == first.content
    assert after.content == bytes(newer.der)


def test_a_revocation_by_another_process_is_re_signed_after_the_recheck_interval(
    ca: CertificateAuthority, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    client.get(url)
    cert = certificate(ca)
    with as_another_process():
        revoke(cert)  # its on-commit publication never runs here: as when it failed
    monkeypatch.setattr(crl_serving, "CRL_RECHECK_SECONDS", 0)

    served = x509.load_der_x509_crl(client.get(url).content)

    assert served.get_revoked_certificate_by_serial_number(cert.serial_int) is not None


def test_the_endpoint_re_signs_when_a_revocation_is_newer_than_the_crl(
    ca: CertificateAuthority, client: Client
) -> None:
    url = reverse("ca:crl-der", kwargs={"slug": ca.slug})
    before = client.get(url)
    cert = certificate(ca)
    # The test transaction never commits, so the on-commit publication does not run: as when it failed.
    revoke(cert)

    after = client.get(url, HTTP_IF_NONE_MATCH=before["ETag"])

    assert after.status_code == 200
    crl = x509.load_der_x509_crl(after.content)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_int) is not None


def test_a_revocation_committed_is_served_at_once(
    ca: CertificateAuthority,
    client: Client,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    url = reverse("ca:crl-pem", kwargs={"slug": ca.slug})
    client.get(url)
    cert = certificate(ca)

    with django_capture_on_commit_callbacks(execute=True):
        revoke(cert)
    served = client.get(url)

    crl = x509.load_pem_x509_crl(served.content)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_int) is not None


def test_an_unknown_ca_is_404(db: None, client: Client) -> None:
    assert client.get(reverse("ca:crl-der", kwargs={"slug": "no-such-ca"})).status_code == 404
