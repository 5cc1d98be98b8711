"""Account events in the hash-chained audit log (:mod:`ca.audit`): logins, failed logins, logouts, password
changes and resets, e-mail changes, certificate sign-ins. Sign-up and e-mail verification are recorded by
:mod:`accounts.services` in their own transactions.

Each entry names the account (or, for a failed login, the username tried, escaped and cut to 150
characters) and the client address (:func:`accounts.proxies.client_address`); never a password. Every
failed login is one entry, with django-axes' count of failures for that attempt when it has one, so the
log shows guessing as it happened. Logins and logouts come from Django's auth signals (connected in
:meth:`accounts.apps.AccountsConfig.ready`); a certificate sign-in is recorded by
:mod:`accounts.certlogin` with the certificate's serial and CA.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import BACKEND_SESSION_KEY
from django.http import HttpRequest

from accounts import proxies
from ca import audit
from ca.models import AuditEvent
from ca.types import Account

#: The longest username tried that is kept in a failed login's entry (Django's username length).
MAX_TRIED = 150
#: The backend of certificate sign-ins (accounts.certlogin.BACKEND; repeated so this module imports no
#: certificate code), whose logins certlogin records itself.
CERTIFICATE_BACKEND = "accounts.certlogin.CertificateBackend"


def _where(request: HttpRequest | None) -> str:
    if request is None:
        return "from an unknown client"
    return f"from {proxies.client_address(request)} on {request.path[:200]!a}"


def record_account_event(
    event: AuditEvent, user: Account, request: HttpRequest | None, *, detail: str = ""
) -> None:
    """One entry: ``user`` did ``event`` (as themselves), from the request's client address."""
    words = _where(request) + (f"; {detail}" if detail else "")
    audit.record(event=event, actor=user, subject_user=user, detail=words)


def on_logged_in(sender: Any, request: HttpRequest | None, user: Account, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    backend = session.get(BACKEND_SESSION_KEY, "") if session is not None else getattr(user, "backend", "")
    if backend == CERTIFICATE_BACKEND:
        return  # accounts.certlogin records CERTIFICATE_LOGIN with the certificate
    record_account_event(AuditEvent.LOGIN, user, request)


def on_logged_out(sender: Any, request: HttpRequest | None, user: Account | None, **kwargs: Any) -> None:
    if user is None:
        return  # nobody was logged in
    record_account_event(AuditEvent.LOGOUT, user, request)


def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """A wrong password (login page, profile, password change) or a locked-out try; never the password."""
    tried = str(credentials.get("username", ""))
    shown = tried[:MAX_TRIED] + (" (cut)" if len(tried) > MAX_TRIED else "")
    detail = f"username tried {shown!a}; {_where(request)}"
    failures = getattr(request, "axes_failures_since_start", None)
    if isinstance(failures, int):
        detail += f"; failures counted toward the lock-out: {failures}"
    if getattr(request, "axes_locked_out", False):
        detail += "; locked out"
    audit.record(event=AuditEvent.LOGIN_FAILED, detail=detail)
