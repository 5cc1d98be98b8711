"""The current password, asked again on the profile and on password change, counted like a login.

A wrong password there is a failed login for django-axes (the ``user_login_failed`` signal, with the
request and the account's username, never the password), so guessing through a logged-in browser is
locked out after the same number of failures as guessing on the login page; once locked out, the password
is not even checked, and the page is django-axes' lock-out page (``AxesMiddleware`` answers for a request
marked ``axes_locked_out``).
"""

from __future__ import annotations

import enum

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest

from ca.types import Account


class PasswordCheck(enum.Enum):
    RIGHT = "right"
    WRONG = "wrong"
    #: Too many failures for this account or client address: the password was not checked.
    LOCKED_OUT = "locked-out"


def check_current_password(request: HttpRequest, user: Account, password: str) -> PasswordCheck:
    """Check ``password`` for ``user``, counting a wrong one toward the lock-out (docs/ARCHITECTURE.md)."""
    credentials = {"username": user.get_username()}
    if not AxesProxyHandler.is_allowed(request, credentials):
        _mark_locked_out(request, credentials)
        return PasswordCheck.LOCKED_OUT
    if user.check_password(password):
        return PasswordCheck.RIGHT
    user_login_failed.send(sender=__name__, credentials=credentials, request=request)
    if getattr(request, "axes_locked_out", False):
        return PasswordCheck.LOCKED_OUT
    return PasswordCheck.WRONG


def _mark_locked_out(request: HttpRequest, credentials: dict[str, str]) -> None:
    """Have ``AxesMiddleware`` answer this request with the lock-out page."""
    request.axes_locked_out = True  # type: ignore[attr-defined]
    request.axes_credentials = credentials  # type: ignore[attr-defined]
