"""Errors of the CA's operations, and the one translation of the PKI core's errors into them.

Every message says what is wrong and what to do, in plain words: management commands print it as it is,
pages and the admin show it to the person who acted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ca.pki.errors import CAKeyError
from ca.pki.profiles import ProfileError


class CAError(Exception):
    """A CA operation cannot be done; the message says why and what to do."""


class AlreadyRevoked(CAError):
    """The certificate is revoked already (a certificate is revoked once, with its first reason)."""


class CrlNotPublished(CAError):
    """The revocation is recorded, but the CRL that lists it could not be signed."""


@contextmanager
def from_core() -> Iterator[None]:
    """Raise the PKI core's errors about keys and profiles (:class:`ca.pki.errors.CAKeyError`,
    :class:`ca.pki.profiles.ProfileError`) as :class:`CAError`, with the same message."""
    try:
        yield
    except (CAKeyError, ProfileError) as exc:
        raise CAError(str(exc)) from exc
