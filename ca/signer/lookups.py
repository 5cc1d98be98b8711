"""The database facts the signer checks a certificate against, one plain SELECT each.

The signer asks these for every certificate it signs, so they are written as single indexed SELECTs rather
than ORM queries (whose building cost more than the signature); each names the rule it reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection

from ca.models import BlockedKey, Certificate, IssuanceAuthorisation, SerialReservation
from ca.services.authorisations import Unused


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


def _row(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def reservation(*, ca_id: int, serial: str, not_after: dt.datetime) -> tuple[str, bool] | None:
    """The state of the reservation of ``serial`` on the CA and whether it was made for ``not_after``."""
    when = connection.ops.adapt_datetimefield_value(not_after)
    sql = f"SELECT state, CASE WHEN not_after = %s THEN 1 ELSE 0 END FROM {_table(SerialReservation)} "  # noqa: S608
    row = _row(sql + "WHERE ca_id = %s AND serial = %s", [when, ca_id, serial])
    return (str(row[0]), bool(row[1])) if row is not None else None


def stored(*, ca_id: int, serial: str) -> bool:
    """Whether a certificate with ``serial`` of the CA is stored (signed before)."""
    sql = f"SELECT 1 FROM {_table(Certificate)} WHERE ca_id = %s AND serial = %s"  # noqa: S608
    return _row(sql, [ca_id, serial]) is not None


def unused_authorisation(*, ca_id: int, serial: str) -> Unused | None:
    """The authorisation to sign ``serial`` on the CA that was not used yet (as
    :func:`ca.services.authorisations.unused`)."""
    columns = "id, spki_sha256, owner_id, approver_name"
    sql = f"SELECT {columns} FROM {_table(IssuanceAuthorisation)} "  # noqa: S608
    row = _row(sql + "WHERE ca_id = %s AND serial = %s AND used_at IS NULL", [ca_id, serial])
    return Unused(int(row[0]), str(row[1]), row[2], str(row[3])) if row is not None else None


def blocked(*, spki_sha256: str) -> bool:
    """Whether the key is blocked (:class:`ca.models.BlockedKey`)."""
    sql = f"SELECT 1 FROM {_table(BlockedKey)} WHERE spki_sha256 = %s"  # noqa: S608
    return _row(sql, [spki_sha256]) is not None


def of_another_account(*, spki_sha256: str, owner_id: int | None) -> bool:
    """Whether a certificate of anyone but ``owner_id`` has the key (the rule of
    :func:`ca.services.issuance.key_refusals`: one key, one account)."""
    table = _table(Certificate)
    if owner_id is None:
        sql = f"SELECT 1 FROM {table} WHERE spki_sha256 = %s AND owner_id IS NOT NULL"  # noqa: S608
        return _row(sql, [spki_sha256]) is not None
    sql = f"SELECT 1 FROM {table} WHERE spki_sha256 = %s AND (owner_id IS NULL OR owner_id <> %s)"  # noqa: S608
    return _row(sql, [spki_sha256, owner_id]) is not None
