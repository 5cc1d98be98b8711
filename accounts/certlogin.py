"""Certificate login: sign a person in from the client certificate their front server (nginx, Apache) checked.

The front server verifies the TLS client certificate and forwards the result in request headers
(docs/FRONT-SERVERS.md, "Certificate login"); the names are settings:

- ``X-SSL-Client-Verify``: ``SUCCESS``, ``NONE`` or ``FAILED:reason`` (nginx ``$ssl_client_verify``,
  Apache ``SSL_CLIENT_VERIFY``);
- ``X-SSL-Client-Cert``: the certificate, PEM: URL-encoded from nginx (``$ssl_client_escaped_cert``), with its
  newlines as spaces from Apache (``SSL_CLIENT_CERT``);
- ``X-SSL-Client-Serial``: upper-case hex (``$ssl_client_serial``, ``SSL_CLIENT_M_SERIAL``), a cross-check.

Rules, checked on every request by :class:`CertificateLoginMiddleware`:

- The headers count only when ``REMOTE_ADDR`` (the TCP peer, never ``X-Forwarded-For``) is one of
  ``ENROLL_TRUSTED_PROXIES`` (:mod:`accounts.proxies`, which also decides for forwarded headers and rate
  limits), and only when the verify header is exactly ``SUCCESS``.
- The certificate is identified by the SHA-256 of its DER bytes (decoded from the forwarded PEM), looked up in
  ``Certificate.fingerprint_sha256``: it must be a certificate this portal issued, byte for byte. No DN
  string is ever compared; the serial header, when sent, must agree with the certificate found.
- The certificate must be valid in the database at that moment (not revoked, not expired, not yet valid)
  and its owner active. So the portal honours a revocation before any front server reloads its CRL.
- The owner is logged in (backend :class:`CertificateBackend`) and the session remembers the certificate
  (:func:`certificate_session`). Another valid certificate switches to its owner; a request of a
  certificate session without a valid certificate (revoked, expired, missing, refused, feature off) ends
  the session. A session made with a password is left alone when no certificate comes, and when the same
  person's certificate comes.

Headers spelled with underscores (``X_SSL_Client_Verify``) become the same WSGI key as the dashed ones
(``HTTP_X_SSL_CLIENT_VERIFY``), so they cannot be told apart here. Django's ASGI handler, its development
and test servers and gunicorn >= 22 drop them before the application sees them; nginx drops them too
(``underscores_in_headers off``); Apache must ``RequestHeader unset`` them. Where both spellings still reach
a WSGI server, wsgiref and older gunicorn join them with a comma, which fails the exact checks below
(``SUCCESS,SUCCESS``, two PEM blocks).

Other Django projects behind the same front server (with this package's ``ca`` and ``accounts`` apps and
the portal's database) need two settings lines::

    MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                      "accounts.certlogin.CertificateLoginMiddleware")
    AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend",
                               "accounts.certlogin.CertificateBackend"]

plus ``ENROLL_CERT_LOGIN_ENABLED = True`` and ``ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]`` (the header
names default to the ones above).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase
from django.utils.crypto import constant_time_compare

from accounts import auditing, proxies
from accounts.frontserver import (
    DEFAULT_CERT_HEADER,
    DEFAULT_SERIAL_HEADER,
    DEFAULT_VERIFY_HEADER,
    check_header_name,
)
from accounts.proxies import TrustedProxies
from ca.clock import utcnow
from ca.models import AuditEvent, Certificate, CertificateStatus
from ca.pki.serials import SerialFormatError, parse_serial
from ca.types import Account

logger = logging.getLogger(__name__)

#: The backend recorded in sessions made by certificate.
BACKEND = "accounts.certlogin.CertificateBackend"
#: Session key of the certificate a session was made with (JSON: fingerprint, serial, CA).
SESSION_KEY = "_enroll_certificate_login"

#: A forwarded PEM certificate is about 1 kB (3 kB URL-encoded); anything much larger is not one.
MAX_HEADER_LENGTH = 32 * 1024
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----")


# --- configuration (the rules: accounts.frontserver and accounts.proxies, shared with enroll/settings.py)


def header_meta_key(name: str, *, setting: str) -> str:
    """The WSGI/``request.META`` key of an HTTP header name; only letters, digits and dashes are allowed."""
    return "HTTP_" + check_header_name(name, setting=setting).upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class Config:
    enabled: bool
    #: Whose headers count (accounts.proxies).
    proxies: TrustedProxies
    verify_key: str
    cert_key: str
    serial_key: str | None


@lru_cache(maxsize=8)
def _config(enabled: bool, trusted: TrustedProxies, verify: str, cert: str, serial: str) -> Config:
    return Config(
        enabled=enabled,
        proxies=trusted,
        verify_key=header_meta_key(verify, setting="ENROLL_CERT_LOGIN_VERIFY_HEADER"),
        cert_key=header_meta_key(cert, setting="ENROLL_CERT_LOGIN_CERT_HEADER"),
        serial_key=header_meta_key(serial, setting="ENROLL_CERT_LOGIN_SERIAL_HEADER") if serial else None,
    )


def current_config() -> Config:
    """The settings, read on every call (tests and ``override_settings`` change them), parsed once each."""
    return _config(
        bool(getattr(settings, "ENROLL_CERT_LOGIN_ENABLED", False)),
        proxies.current(),
        getattr(settings, "ENROLL_CERT_LOGIN_VERIFY_HEADER", DEFAULT_VERIFY_HEADER),
        getattr(settings, "ENROLL_CERT_LOGIN_CERT_HEADER", DEFAULT_CERT_HEADER),
        getattr(settings, "ENROLL_CERT_LOGIN_SERIAL_HEADER", DEFAULT_SERIAL_HEADER) or "",
    )


# --- reading the front server's headers ------------------------------------------------------------


def parse_forwarded_pem(value: str) -> bytes | None:
    """The DER bytes of the one PEM certificate block in a forwarded header, or None for anything else.

    Understands nginx's ``$ssl_client_escaped_cert`` (URL-encoded PEM), Apache's ``SSL_CLIENT_CERT`` (PEM with
    its newlines as spaces) and plain PEM; refuses two blocks, other PEM types and garbage. The bytes are not
    parsed as X.509 here: :func:`find_certificate` accepts only the exact DER of a certificate the portal
    issued, which no other bytes can match.
    """
    if not value or len(value) > MAX_HEADER_LENGTH:
        return None
    text = value
    if "%" in text:
        try:
            text = unquote(text, encoding="ascii", errors="strict")
        except UnicodeDecodeError:
            return None
    match = _PEM.fullmatch(text.strip())
    if match is None:
        return None
    try:
        der = base64.b64decode("".join(match["body"].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return der or None


@dataclass(frozen=True, slots=True)
class ForwardedCertificate:
    """A certificate the front server says it verified (not yet looked up)."""

    der: bytes
    fingerprint_sha256: str
    #: From the serial header, when the front server sends one.
    serial: int | None


def read_forwarded_certificate(
    request: HttpRequest, config: Config | None = None
) -> ForwardedCertificate | None:
    """The verified client certificate a trusted front server forwarded with this request, if any."""
    config = config or current_config()
    meta = request.META
    verify = meta.get(config.verify_key)
    cert = meta.get(config.cert_key)
    if verify is None and cert is None:
        return None
    remote_addr = meta.get("REMOTE_ADDR")
    if not config.proxies.trusts(remote_addr):  # the TCP peer: X-Forwarded-For plays no part
        logger.warning(
            "certificate login: client-certificate headers from %r, which is not in ENROLL_TRUSTED_PROXIES: "
            "ignored",
            remote_addr,
        )
        return None
    if verify != "SUCCESS":
        return None
    der = parse_forwarded_pem(cert) if isinstance(cert, str) else None
    if der is None:
        logger.warning("certificate login: verify SUCCESS but no readable certificate in %s", config.cert_key)
        return None
    serial: int | None = None
    serial_text = meta.get(config.serial_key) if config.serial_key else None
    if serial_text:
        try:
            serial = parse_serial(text=serial_text)
        except SerialFormatError:
            logger.warning("certificate login: unreadable serial header %r", serial_text[:80])
            return None
    return ForwardedCertificate(der=der, fingerprint_sha256=hashlib.sha256(der).hexdigest(), serial=serial)


def find_certificate(forwarded: ForwardedCertificate) -> Certificate | None:
    """The portal's certificate for ``forwarded`` if it may log its owner in right now, else None."""
    matches = list(
        Certificate.objects.issued()
        .select_related("ca", "owner", "revocation")
        .filter(fingerprint_sha256=forwarded.fingerprint_sha256)[:2]
    )
    if len(matches) != 1 or bytes(matches[0].der) != forwarded.der:
        logger.info(  # the front server may trust other CAs too: not an alarm
            "certificate login: the front server verified a certificate not issued here (SHA-256 %s)",
            forwarded.fingerprint_sha256,
        )
        return None
    certificate = matches[0]
    if forwarded.serial is not None and forwarded.serial != certificate.serial_int:
        logger.warning(
            "certificate login: serial header does not match certificate %s of %s: refused",
            certificate.serial,
            certificate.ca.slug,
        )
        return None
    status = certificate.status_at(utcnow())
    if status is not CertificateStatus.VALID:
        # The front server still accepts it: its CRL (or OCSP cache) is behind the database.
        logger.warning(
            "certificate login: certificate %s of %s is %s: refused",
            certificate.serial,
            certificate.ca.slug,
            status.label.lower(),
        )
        return None
    owner = certificate.owner
    if owner is None or not getattr(owner, "is_active", False):
        return None
    return certificate


# --- the session -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateSession:
    """What a session made by certificate remembers: shown on the profile page."""

    fingerprint_sha256: str
    serial: str
    ca_slug: str
    issuer: str


def _session_marker(certificate: Certificate) -> dict[str, str]:
    return {
        "fingerprint_sha256": certificate.fingerprint_sha256,
        "serial": certificate.serial,
        "ca_slug": certificate.ca.slug,
        "issuer": certificate.ca.name,
    }


def certificate_session(request: HttpRequest) -> CertificateSession | None:
    """The certificate this request's session was made with, or None (password session, anonymous)."""
    if not request.user.is_authenticated:
        return None
    marker = request.session.get(SESSION_KEY)
    if not isinstance(marker, dict):
        return None
    try:
        return CertificateSession(
            fingerprint_sha256=str(marker["fingerprint_sha256"]),
            serial=str(marker["serial"]),
            ca_slug=str(marker["ca_slug"]),
            issuer=str(marker["issuer"]),
        )
    except KeyError:
        return None


# --- backend and middleware ------------------------------------------------------------------------


class CertificateBackend(BaseBackend):
    """Authenticates ``client_certificate=ForwardedCertificate(...)``; permissions come from ModelBackend."""

    def authenticate(
        self,
        request: HttpRequest | None,
        client_certificate: ForwardedCertificate | None = None,
        **kwargs: Any,
    ) -> Account | None:
        if client_certificate is None or not current_config().enabled:
            return None
        certificate = find_certificate(client_certificate)
        return certificate.owner if certificate is not None else None

    def get_user(self, user_id: Any) -> Account | None:
        if not current_config().enabled:
            return None
        user = get_user_model()._default_manager.filter(pk=user_id).first()
        return user if user is not None and getattr(user, "is_active", False) else None


@lru_cache(maxsize=1)
def _device_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


def _device_path(path: str) -> bool:
    """A device protocol's path (settings.ENROLL_DEVICE_PATHS, matched like SECURE_REDIRECT_EXEMPT)."""
    patterns = _device_patterns(tuple(getattr(settings, "ENROLL_DEVICE_PATHS", ())))
    return any(pattern.search(path.lstrip("/")) for pattern in patterns)


class CertificateLoginMiddleware:
    """Logs the certificate's owner in on every request (see the module's rules).

    Goes after ``AuthenticationMiddleware``. While ``ENROLL_CERT_LOGIN_ENABLED`` is off it only ends
    sessions made by certificate.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not hasattr(request, "user") or not hasattr(request, "session"):
            raise ImproperlyConfigured(
                "CertificateLoginMiddleware needs SessionMiddleware and AuthenticationMiddleware before it."
            )
        self.process_request(request)
        response: HttpResponseBase = self.get_response(request)
        return response

    def process_request(self, request: HttpRequest) -> None:
        if _device_path(request.path_info):
            return  # EST re-enrollment reads the forwarded certificate itself; a device gets no session
        made_by_certificate = isinstance(request.session.get(SESSION_KEY), dict)
        config = current_config()
        forwarded = read_forwarded_certificate(request, config) if config.enabled else None
        certificate = find_certificate(forwarded) if forwarded is not None else None
        if certificate is None or certificate.owner is None:
            if made_by_certificate:
                auth.logout(request)  # revoked, expired, no certificate any more, or the feature turned off
            return
        user = request.user
        if user.is_authenticated and user.pk == certificate.owner.pk:
            if not made_by_certificate:
                return  # signed in with a password: the same person, left alone
            marker = request.session[SESSION_KEY]
            if constant_time_compare(
                str(marker.get("fingerprint_sha256", "")), certificate.fingerprint_sha256
            ):
                return  # the session's own certificate, still valid
        # find_certificate has checked all that CertificateBackend.authenticate checks (the backend calls it):
        # log the owner in without looking the certificate up a second time.
        owner = certificate.owner
        auth.login(request, owner, backend=BACKEND)  # a new session (another user) or a new key (same user)
        request.session[SESSION_KEY] = _session_marker(certificate)
        auditing.record_account_event(
            AuditEvent.CERTIFICATE_LOGIN,
            owner,
            request,
            detail=f"certificate {certificate.serial} of CA {certificate.ca.slug}",
        )
        logger.info(
            "certificate login: %s with certificate %s of %s",
            owner.get_username(),
            certificate.serial,
            certificate.ca.slug,
        )
