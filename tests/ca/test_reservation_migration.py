"""Migration 0007: every serial already used gets its reservation; rows without DER become open ones."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("ca", "0006_audit_chain")]
AFTER = [("ca", "0009_certificate_has_der")]


@pytest.mark.django_db(transaction=True)
def test_existing_serials_are_reserved_and_rows_without_der_become_open_reservations() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ca = old.get_model("ca", "CertificateAuthority").objects.create(
        slug="old", name="Old", certificate_der=b"\x30\x00", key_file="k", key_type="ec-p256",
        subject="CN=Old",
        serial="01", not_before=now, not_after=now + dt.timedelta(days=3650), fingerprint_sha256="0" * 64,
        created_at=now,
    )  # fmt: skip
    certificates = old.get_model("ca", "Certificate").objects
    fields = {"ca": ca, "subject": "CN=a", "not_before": now, "not_after": now + dt.timedelta(days=365),
              "created_at": now}  # fmt: skip
    certificates.create(serial="0A", der=b"\x30\x00", **fields)
    certificates.create(serial="0B", der=b"", **fields)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps

    reserved = dict(new.get_model("ca", "SerialReservation").objects.values_list("serial", "state"))
    assert reserved == {"0A": "issued", "0B": "reserved"}
    assert list(new.get_model("ca", "Certificate").objects.values_list("serial", flat=True)) == ["0A"]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
