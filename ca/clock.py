"""The one source of the current time for the CA and the flows: timezone-aware UTC.

Functions that depend on time take ``now`` as a keyword argument and fall back to :func:`utcnow`,
so tests can pass a time or freeze the clock.
"""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)
