"""Errors of the CA's operations, and the one translation of the PKI core's errors into them.

Every message says what is wrong and what to do, in plain words: management commands print it as it is,
pages and the admin show it to the person who acted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ca.pki.errors import CAKeyError, KeyUnavailableError
from ca.pki.profiles import ProfileError


class CAError(Exception):
    """A CA operation cannot be done; the message says why and what to do."""


class AlreadyRevoked(CAError):
    """The certificate is revoked already (a certificate is revoked once, with its first reason)."""


class KeyUnavailable(CAError):
    """The CA key cannot sign at all right now (token missing, wrong PIN, no PKCS#11 module, the signer not
    running): nothing was signed. Flows change nothing and say so; the same action works once the operator
    fixed it. ``unused`` holds what the caller may release once its transaction rolled back (the serial
    reservations of :func:`ca.services.issuance.issue` that no CA signature carries)."""

    def __init__(self, message: str, *, unused: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.unused = list(unused)


class CrlNotPublished(CAError):
    """The revocation is recorded, but the CRL that lists it could not be signed."""


@contextmanager
def from_core() -> Iterator[None]:
    """Raise the PKI core's errors about keys and profiles (:class:`ca.pki.errors.CAKeyError`,
    :class:`ca.pki.profiles.ProfileError`) as :class:`CAError`, with the same message; a key that cannot
    sign at all (:class:`ca.pki.errors.KeyUnavailableError`) as :class:`KeyUnavailable`."""
    try:
        yield
    except KeyUnavailableError as exc:
        raise KeyUnavailable(str(exc)) from exc
    except (CAKeyError, ProfileError) as exc:
        raise CAError(str(exc)) from exc
