"""The certificate query vocabulary (CertificateQuerySet) and Certificate.status_at give one answer.

Validity is RFC 5280 4.1.2.5's: from notBefore through notAfter, inclusive, in whole seconds; so the
notAfter second is valid to its end. A revocation counts at every instant. The status terms select
exactly the rows whose status_at says so, at the boundaries and (property test) anywhere.
"""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ca.models import (
    Certificate,
    CertificateAuthority,
    CertificateQuerySet,
    CertificateStatus,
    Revocation,
    RevocationReason,
)
from ca.pki.serials import format_serial, new_serial

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
SECOND = dt.timedelta(seconds=1)


def stored(
    ca: CertificateAuthority,
    *,
    not_before: dt.datetime = T0,
    not_after: dt.datetime = T0 + dt.timedelta(days=30),
    revoked_at: dt.datetime | None = None,
    owner: User | None = None,
    spki_sha256: str | None = None,
) -> Certificate:
    """A certificate row of ``ca`` (the queries read only its columns, not its DER), revoked if asked."""
    certificate = Certificate.objects.create(
        ca=ca,
        serial=format_serial(serial=new_serial()),
        der=b"\x30\x00",
        subject="CN=query test",
        not_before=not_before,
        not_after=not_after,
        owner=owner,
        fingerprint_sha256=secrets.token_hex(32),
        spki_sha256=spki_sha256 or secrets.token_hex(32),
        profile="client",
        request_sha256="0" * 64,
        created_at=not_before,
    )
    if revoked_at is not None:
        Revocation.objects.create(
            certificate=certificate, reason=RevocationReason.SUPERSEDED, revoked_at=revoked_at
        )
    return certificate


def reloaded(certificate: Certificate) -> Certificate:
    """``certificate`` read again, with its revocation, as the portal's pages read it."""
    return Certificate.objects.select_related("revocation").get(pk=certificate.pk)


def status_terms(when: dt.datetime) -> dict[CertificateStatus, CertificateQuerySet]:
    """Each status the vocabulary has a term for, and that term at ``when``."""
    return {
        CertificateStatus.VALID: Certificate.objects.valid_at(when),
        CertificateStatus.EXPIRED: Certificate.objects.expired_at(when),
        CertificateStatus.REVOKED: Certificate.objects.revoked(),
    }


def selected_by(certificate: Certificate, when: dt.datetime) -> set[CertificateStatus]:
    """The statuses whose term at ``when`` selects ``certificate``."""
    return {status for status, rows in status_terms(when).items() if rows.filter(pk=certificate.pk).exists()}


def expected_terms(status: CertificateStatus) -> set[CertificateStatus]:
    """The terms that select a certificate with ``status``: its own, or none when it is not yet valid."""
    return set() if status == CertificateStatus.NOT_YET_VALID else {status}


# --- the boundaries --------------------------------------------------------------------------------

NOT_BEFORE = T0
NOT_AFTER = T0 + dt.timedelta(days=30)

BOUNDARIES = [
    pytest.param(NOT_BEFORE - SECOND, CertificateStatus.NOT_YET_VALID, id="a second before notBefore"),
    pytest.param(
        NOT_BEFORE - MICROSECOND, CertificateStatus.NOT_YET_VALID, id="a microsecond before notBefore"
    ),
    pytest.param(NOT_BEFORE, CertificateStatus.VALID, id="notBefore"),
    pytest.param(NOT_BEFORE + MICROSECOND, CertificateStatus.VALID, id="a microsecond after notBefore"),
    pytest.param(NOT_AFTER - SECOND, CertificateStatus.VALID, id="a second before notAfter"),
    pytest.param(NOT_AFTER, CertificateStatus.VALID, id="notAfter"),
    pytest.param(NOT_AFTER + SECOND / 2, CertificateStatus.VALID, id="within the notAfter second"),
    pytest.param(NOT_AFTER + SECOND - MICROSECOND, CertificateStatus.VALID, id="the end of notAfter second"),
    pytest.param(NOT_AFTER + SECOND, CertificateStatus.EXPIRED, id="a second after notAfter"),
    pytest.param(NOT_AFTER + dt.timedelta(days=400), CertificateStatus.EXPIRED, id="long after notAfter"),
]


@pytest.mark.parametrize(("when", "status"), BOUNDARIES)
def test_status_at_and_the_status_terms_agree_around_the_validity_period(
    ca: CertificateAuthority, when: dt.datetime, status: CertificateStatus
) -> None:
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER)

    assert reloaded(certificate).status_at(when) == status
    assert selected_by(certificate, when) == expected_terms(status)


def test_valid_at_includes_the_not_before_instant(ca: CertificateAuthority) -> None:
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER)

    assert list(Certificate.objects.valid_at(NOT_BEFORE)) == [certificate]
    assert not Certificate.objects.valid_at(NOT_BEFORE - MICROSECOND).exists()


@pytest.mark.parametrize(
    "into_the_second", [dt.timedelta(0), MICROSECOND, SECOND / 2, SECOND - MICROSECOND], ids=str
)
def test_valid_at_includes_the_not_after_second(
    ca: CertificateAuthority, into_the_second: dt.timedelta
) -> None:
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER)

    assert list(Certificate.objects.valid_at(NOT_AFTER + into_the_second)) == [certificate]
    assert not Certificate.objects.expired_at(NOT_AFTER + into_the_second).exists()


def test_expired_at_begins_one_second_after_not_after(ca: CertificateAuthority) -> None:
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER)

    assert list(Certificate.objects.expired_at(NOT_AFTER + SECOND)) == [certificate]
    assert not Certificate.objects.valid_at(NOT_AFTER + SECOND).exists()


def test_a_certificate_not_yet_valid_is_neither_valid_nor_expired(ca: CertificateAuthority) -> None:
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER)
    before = NOT_BEFORE - dt.timedelta(days=1)

    assert reloaded(certificate).status_at(before) == CertificateStatus.NOT_YET_VALID
    assert selected_by(certificate, before) == set()


# --- revocation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [NOT_BEFORE - SECOND, NOT_BEFORE, NOT_AFTER, NOT_AFTER + dt.timedelta(days=400)],
    ids=["before notBefore", "notBefore", "notAfter", "long after notAfter"],
)
def test_a_revoked_certificate_is_revoked_and_neither_valid_nor_expired(
    ca: CertificateAuthority, when: dt.datetime
) -> None:
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER, revoked_at=NOT_BEFORE + SECOND)

    assert reloaded(certificate).status_at(when) == CertificateStatus.REVOKED
    assert selected_by(certificate, when) == {CertificateStatus.REVOKED}


def test_a_revocation_counts_before_its_revoked_at(ca: CertificateAuthority) -> None:
    revoked_at = NOT_BEFORE + dt.timedelta(days=10)
    certificate = stored(ca, not_before=NOT_BEFORE, not_after=NOT_AFTER, revoked_at=revoked_at)

    assert reloaded(certificate).status_at(revoked_at - SECOND) == CertificateStatus.REVOKED
    assert not Certificate.objects.valid_at(revoked_at - SECOND).exists()


def test_revoked_selects_only_revoked_certificates(ca: CertificateAuthority) -> None:
    revoked = stored(ca, revoked_at=T0)
    stored(ca)

    assert list(Certificate.objects.revoked()) == [revoked]


# --- issued, keys, and how the terms combine ---------------------------------------------------------


def test_issued_includes_every_stored_certificate(ca: CertificateAuthority) -> None:
    certificates = {stored(ca), stored(ca, revoked_at=T0), stored(ca, not_after=T0 + SECOND)}

    assert set(Certificate.objects.issued()) == certificates


def test_of_keys_selects_the_certificates_of_those_keys(ca: CertificateAuthority) -> None:
    first, second, other = secrets.token_hex(32), secrets.token_hex(32), secrets.token_hex(32)
    wanted = {stored(ca, spki_sha256=first), stored(ca, spki_sha256=first), stored(ca, spki_sha256=second)}
    stored(ca, spki_sha256=other)

    assert set(Certificate.objects.of_keys([first, second])) == wanted
    assert set(Certificate.objects.of_keys(key for key in [first, second])) == wanted
    assert not Certificate.objects.of_keys([]).exists()


def test_the_terms_chain_with_filters_and_on_related_managers(
    ca: CertificateAuthority, alice: User, bob: User
) -> None:
    mine = stored(ca, owner=alice)
    stored(ca, owner=alice, revoked_at=T0)
    stored(ca, owner=bob)
    when = T0 + dt.timedelta(days=1)

    assert list(Certificate.objects.filter(owner=alice).issued().valid_at(when)) == [mine]
    assert list(Certificate.objects.issued().valid_at(when).filter(owner=alice)) == [mine]
    assert list(alice.certificates.valid_at(when)) == [mine]
    assert set(ca.certificates.valid_at(when)) == set(Certificate.objects.valid_at(when))


# --- the property: the SQL and status_at never disagree ----------------------------------------------

#: A time near T0, at whole seconds or just off them, so the edges of the validity periods are hit.
instants = st.builds(
    lambda seconds, micros: T0 + dt.timedelta(seconds=seconds, microseconds=micros),
    st.integers(min_value=-3, max_value=14),
    st.sampled_from([0, 1, 500_000, 999_999]) | st.integers(min_value=0, max_value=999_999),
)
#: notBefore and notAfter in whole seconds (as certificates carry them), a few seconds apart.
periods = st.builds(
    lambda start, length: (T0 + dt.timedelta(seconds=start), T0 + dt.timedelta(seconds=start + length)),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=6),
)
rows = st.tuples(periods, st.none() | instants)


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(certificates=st.lists(rows, min_size=1, max_size=6), when=instants)
def test_each_status_term_selects_exactly_the_rows_whose_status_at_says_so(
    ca: CertificateAuthority,
    certificates: list[tuple[tuple[dt.datetime, dt.datetime], dt.datetime | None]],
    when: dt.datetime,
) -> None:
    with transaction.atomic():
        for (not_before, not_after), revoked_at in certificates:
            stored(ca, not_before=not_before, not_after=not_after, revoked_at=revoked_at)
        statuses = {c.pk: c.status_at(when) for c in Certificate.objects.select_related("revocation")}

        for status, term in status_terms(when).items():
            assert set(term.values_list("pk", flat=True)) == {
                pk for pk, said in statuses.items() if said == status
            }, status
        transaction.set_rollback(True)
