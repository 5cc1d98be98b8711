"""Certificate login (accounts.certlogin) with Django's test client: the headers a front server forwards,
from trusted and untrusted addresses, in nginx and Apache format, valid, revoked, expired, unknown and
garbage; sessions made by certificate, switched and ended; the profile page; ASGI; the settings' checks.

The real path (Chromium -> nginx -> live portal) is in tests/realclients/test_certificate_login_nginx.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import runpy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import time_machine
from asgiref.sync import async_to_sync
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.test.client import AsyncClientHandler
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks
from pytest_django.fixtures import Settings

from accounts import certlogin
from ca.clock import utcnow
from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, RevocationReason
from ca.services.export import export_certificate
from ca.services.revocation import revoke_certificate

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

PROFILE = reverse("accounts:profile")
SETTINGS_FILE = Path(__file__).resolve().parents[2] / "enroll" / "settings.py"


# --- what front servers send -------------------------------------------------------------------------


def pem_of(certificate: Certificate) -> str:
    return export_certificate(certificate=certificate, fmt="pem").content.decode()


def nginx_format(pem: str) -> str:
    """``$ssl_client_escaped_cert``: the PEM URL-encoded (spaces, newlines, '+', '/', '=' escaped)."""
    return quote(pem, safe="")


def nginx_format_light(pem: str) -> str:
    """URL-encoded, but with '/', '+' and '=' left as they are (any URL escaping must be understood)."""
    return quote(pem, safe="/+=")


def apache_format(pem: str) -> str:
    """``SSL_CLIENT_CERT`` as mod_headers forwards it: the PEM with its newlines replaced by spaces."""
    return pem.replace("\n", " ")


def forwarded(
    cert: str | None,
    *,
    verify: str | None = "SUCCESS",
    serial: str | None = None,
    remote: str | None = "127.0.0.1",
    **extra: str,
) -> dict[str, Any]:
    """The WSGI environ a front server's request produces (header names as WSGI spells them)."""
    meta = dict(extra)
    if verify is not None:
        meta["HTTP_X_SSL_CLIENT_VERIFY"] = verify
    if cert is not None:
        meta["HTTP_X_SSL_CLIENT_CERT"] = cert
    if serial is not None:
        meta["HTTP_X_SSL_CLIENT_SERIAL"] = serial
    if remote is not None:
        meta["REMOTE_ADDR"] = remote
    return meta


def self_signed(*, serial: int | None = None, common_name: str = "alice") -> str:
    """A certificate from a CA this portal does not know (optionally copying a real serial)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = utcnow()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class Certs:
    alice: Certificate
    bob: Certificate
    alice_pem: str
    bob_pem: str


@pytest.fixture(autouse=True)
def cert_login_on(settings: Settings) -> Settings:
    settings.ENROLL_CERT_LOGIN_ENABLED = True
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1", "::1", "10.0.0.0/8"]
    return settings


@pytest.fixture
def certs(ca: CertificateAuthority, alice: User, bob: User, issue_for: Callable[..., Certificate]) -> Certs:
    alice_certificate, bob_certificate = issue_for(alice), issue_for(bob)
    return Certs(alice_certificate, bob_certificate, pem_of(alice_certificate), pem_of(bob_certificate))


def get(client: Client, meta: dict[str, Any], path: str = PROFILE) -> Response:
    response = client.get(path, **meta)  # a 500 would raise here (raise_request_exception)
    assert response.status_code in (200, 302), response.status_code
    return response


def signed_in(response: Response) -> str | None:
    """Who the request was served as: the username on the profile page, or None (sent to the login page)."""
    user = response.wsgi_request.user
    if response.status_code == 302:
        assert response["Location"].startswith(reverse("accounts:login")), response["Location"]
        assert not user.is_authenticated
        return None
    assert user.is_authenticated
    username: str = user.get_username()
    assert username in response.content.decode()
    return username


def made_by_certificate(client: Client) -> bool:
    return certlogin.SESSION_KEY in client.session


def revoke(certificate: Certificate, capture: DjangoCaptureOnCommitCallbacks) -> None:
    with capture(execute=True):
        revoke_certificate(certificate=certificate, reason=RevocationReason.KEY_COMPROMISE)


# --- the table -----------------------------------------------------------------------------------------

Case = Callable[[Certs], dict[str, Any]]

CASES: list[tuple[str, Case, str | None]] = [
    # Who is logged in for what a front server forwards.
    ("nginx", lambda c: forwarded(nginx_format(c.alice_pem), serial=c.alice.serial), "alice"),
    ("nginx-light-escaping", lambda c: forwarded(nginx_format_light(c.alice_pem)), "alice"),
    ("apache", lambda c: forwarded(apache_format(c.alice_pem), serial=c.alice.serial), "alice"),
    ("plain-pem-without-serial", lambda c: forwarded(c.alice_pem.strip()), "alice"),
    ("bob", lambda c: forwarded(nginx_format(c.bob_pem), serial=c.bob.serial), "bob"),
    (
        "serial-with-colons",
        lambda c: forwarded(nginx_format(c.alice_pem), serial=c.alice.serial_colons),
        "alice",
    ),
    ("trusted-network", lambda c: forwarded(nginx_format(c.alice_pem), remote="10.20.30.40"), "alice"),
    ("trusted-ipv6", lambda c: forwarded(nginx_format(c.alice_pem), remote="::1"), "alice"),
    ("ipv4-mapped", lambda c: forwarded(nginx_format(c.alice_pem), remote="::ffff:127.0.0.1"), "alice"),
    # Not from a trusted proxy.
    ("untrusted-address", lambda c: forwarded(nginx_format(c.alice_pem), remote="192.0.2.7"), None),
    ("outside-network", lambda c: forwarded(nginx_format(c.alice_pem), remote="11.0.0.1"), None),
    (
        "x-forwarded-for-is-ignored",
        lambda c: forwarded(
            nginx_format(c.alice_pem),
            remote="192.0.2.7",
            HTTP_X_FORWARDED_FOR="127.0.0.1",
            HTTP_X_REAL_IP="127.0.0.1",
        ),
        None,
    ),
    ("no-remote-address", lambda c: forwarded(nginx_format(c.alice_pem), remote=""), None),
    ("remote-address-garbage", lambda c: forwarded(nginx_format(c.alice_pem), remote="localhost"), None),
    # The verify header must be exactly SUCCESS.
    ("verify-none", lambda c: forwarded(nginx_format(c.alice_pem), verify="NONE"), None),
    (
        "verify-failed",
        lambda c: forwarded(nginx_format(c.alice_pem), verify="FAILED:certificate revoked"),
        None,
    ),
    ("verify-lowercase", lambda c: forwarded(nginx_format(c.alice_pem), verify="success"), None),
    ("verify-padded", lambda c: forwarded(nginx_format(c.alice_pem), verify=" SUCCESS"), None),
    ("verify-joined", lambda c: forwarded(nginx_format(c.alice_pem), verify="SUCCESS,SUCCESS"), None),
    ("verify-generous", lambda c: forwarded(nginx_format(c.alice_pem), verify="GENEROUS"), None),
    ("verify-missing", lambda c: forwarded(nginx_format(c.alice_pem), verify=None), None),
    ("certificate-missing", lambda c: forwarded(None), None),
    # Certificates this portal did not issue, or a serial that does not match.
    ("unknown-ca", lambda c: forwarded(nginx_format(self_signed())), None),
    (
        "forged-with-alices-serial",
        lambda c: forwarded(nginx_format(self_signed(serial=c.alice.serial_int)), serial=c.alice.serial),
        None,
    ),
    ("serial-mismatch", lambda c: forwarded(nginx_format(c.alice_pem), serial=c.bob.serial), None),
    ("serial-garbage", lambda c: forwarded(nginx_format(c.alice_pem), serial="not-hex"), None),
    # Garbage: never a 500, never a login.
    ("cert-null", lambda c: forwarded("(null)"), None),
    ("cert-empty", lambda c: forwarded(""), None),
    ("cert-bad-escape", lambda c: forwarded("%ZZ%FF%FE" + nginx_format(c.alice_pem)), None),
    ("cert-latin1-bytes", lambda c: forwarded(nginx_format(c.alice_pem).replace("MII", "M\xe9I", 1)), None),
    (
        "cert-not-base64",
        lambda c: forwarded("-----BEGIN CERTIFICATE-----garbage!-----END CERTIFICATE-----"),
        None,
    ),
    (
        "cert-base64-not-der",
        lambda c: forwarded("-----BEGIN CERTIFICATE-----QUJD-----END CERTIFICATE-----"),
        None,
    ),
    ("cert-truncated", lambda c: forwarded(c.alice_pem[:200] + "-----END CERTIFICATE-----"), None),
    (
        "cert-two-joined",
        lambda c: forwarded(nginx_format(c.alice_pem) + "," + nginx_format(c.alice_pem)),
        None,
    ),
    ("cert-two-blocks", lambda c: forwarded(c.alice_pem + c.bob_pem), None),
    ("cert-trailing-text", lambda c: forwarded(c.alice_pem + "and more"), None),
    ("cert-huge", lambda c: forwarded(c.alice_pem + " " * 100_000), None),
    ("cert-is-a-key", lambda c: forwarded(c.alice_pem.replace("CERTIFICATE", "PRIVATE KEY")), None),
]


@pytest.mark.parametrize(
    ("case", "expected"), [(case, who) for _, case, who in CASES], ids=[c[0] for c in CASES]
)
def test_who_is_signed_in(client: Client, certs: Certs, case: Case, expected: str | None) -> None:
    response = get(client, case(certs))
    assert signed_in(response) == expected
    assert made_by_certificate(client) is (expected is not None)
    if expected is not None:
        assert client.session[BACKEND_SESSION_KEY] == certlogin.BACKEND


def test_disabled_logs_in_nobody(client: Client, certs: Certs, settings: Settings) -> None:
    settings.ENROLL_CERT_LOGIN_ENABLED = False
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) is None


def test_nobody_trusted_by_default(client: Client, certs: Certs, settings: Settings) -> None:
    settings.ENROLL_TRUSTED_PROXIES = []
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) is None


def test_unix_socket_peer_only_when_listed(client: Client, certs: Certs, settings: Settings) -> None:
    meta = forwarded(nginx_format(certs.alice_pem), remote="")
    assert signed_in(get(client, meta)) is None
    settings.ENROLL_TRUSTED_PROXIES = ["unix"]
    assert signed_in(get(client, meta)) == "alice"
    assert signed_in(get(Client(), forwarded(nginx_format(certs.alice_pem)))) is None  # 127.0.0.1 not listed


def test_header_names_are_settings(client: Client, certs: Certs, settings: Settings) -> None:
    settings.ENROLL_CERT_LOGIN_VERIFY_HEADER = "X-Client-Verify"
    settings.ENROLL_CERT_LOGIN_CERT_HEADER = "X-Client-Cert"
    settings.ENROLL_CERT_LOGIN_SERIAL_HEADER = "X-Client-Serial"
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) is None  # the default names
    meta = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_CLIENT_VERIFY": "SUCCESS",
        "HTTP_X_CLIENT_CERT": nginx_format(certs.alice_pem),
        "HTTP_X_CLIENT_SERIAL": certs.bob.serial,
    }
    assert signed_in(get(client, meta)) is None  # the serial header is read and must match
    assert signed_in(get(client, {**meta, "HTTP_X_CLIENT_SERIAL": certs.alice.serial})) == "alice"


def test_inactive_owner_logs_in_nobody(client: Client, certs: Certs, alice: User) -> None:
    alice.is_active = False
    alice.save()
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) is None


def test_one_certificate_lookup_per_request(client: Client, certs: Certs) -> None:
    """The budget: one indexed look-up by fingerprint per request, the request that logs in included."""
    meta = forwarded(nginx_format(certs.alice_pem), serial=certs.alice.serial)
    for expected in ("alice", "alice"):  # the login, then a request of the session it made
        with CaptureQueriesContext(connection) as queries:
            assert signed_in(get(client, meta)) == expected
        lookups = [q["sql"] for q in queries.captured_queries if '"fingerprint_sha256" =' in q["sql"]]
        assert len(lookups) == 1, lookups


# --- revoked, expired, not yet valid -----------------------------------------------------------------------


def test_revoked_certificate_logs_in_nobody_and_ends_its_session(
    client: Client,
    certs: Certs,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    meta = forwarded(nginx_format(certs.alice_pem), serial=certs.alice.serial)
    assert signed_in(get(client, meta)) == "alice"
    session_key = client.session.session_key
    assert signed_in(get(client, meta)) == "alice"
    assert client.session.session_key == session_key  # no new login on every request

    revoke(certs.alice, django_capture_on_commit_callbacks)
    # The front server has not reloaded its CRL yet: it still says SUCCESS. The portal checks the database.
    with caplog.at_level(logging.WARNING, logger="accounts.certlogin"):
        assert signed_in(get(client, meta)) is None
    assert "is revoked: refused" in caplog.text
    assert not made_by_certificate(client)
    assert "_auth_user_id" not in client.session
    assert signed_in(get(client, {})) is None
    assert signed_in(get(Client(), meta)) is None  # and no fresh login either


def test_expired_and_not_yet_valid_log_in_nobody(client: Client, certs: Certs) -> None:
    meta = forwarded(nginx_format(certs.alice_pem))
    with time_machine.travel(certs.alice.not_after + dt.timedelta(seconds=1), tick=False):
        assert signed_in(get(client, meta)) is None
    with time_machine.travel(certs.alice.not_before - dt.timedelta(seconds=1), tick=False):
        assert signed_in(get(client, meta)) is None
    with time_machine.travel(certs.alice.not_after - dt.timedelta(seconds=1), tick=False):
        assert signed_in(get(client, meta)) == "alice"


def test_a_session_made_by_certificate_ends_when_the_certificate_expires(
    client: Client, certs: Certs
) -> None:
    now = utcnow()
    Certificate.objects.filter(pk=certs.alice.pk).update(not_after=now + dt.timedelta(minutes=1))
    meta = forwarded(nginx_format(certs.alice_pem))
    with time_machine.travel(now, tick=False):
        assert signed_in(get(client, meta)) == "alice"
    with time_machine.travel(now + dt.timedelta(minutes=2), tick=False):
        assert signed_in(get(client, meta)) is None
        assert not made_by_certificate(client)


# --- sessions --------------------------------------------------------------------------------------------


def test_a_certificate_session_ends_without_a_certificate(client: Client, certs: Certs) -> None:
    meta = forwarded(nginx_format(certs.alice_pem))
    for following in (
        {},  # straight to the portal, or a front server with "optional" and no certificate
        forwarded(nginx_format(certs.alice_pem), verify="NONE"),
        forwarded(nginx_format(certs.alice_pem), remote="192.0.2.7"),  # the cookie used from elsewhere
        forwarded("garbage"),
    ):
        assert signed_in(get(client, meta)) == "alice"
        assert signed_in(get(client, following)) is None
        assert not made_by_certificate(client)


def test_another_certificate_switches_to_its_owner(client: Client, certs: Certs) -> None:
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) == "alice"
    assert signed_in(get(client, forwarded(nginx_format(certs.bob_pem)))) == "bob"
    assert client.session[certlogin.SESSION_KEY]["serial"] == certs.bob.serial


def test_another_certificate_of_the_same_owner_updates_the_session(
    client: Client, certs: Certs, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    second = issue_for(alice)
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) == "alice"
    assert signed_in(get(client, forwarded(nginx_format(pem_of(second))))) == "alice"
    assert client.session[certlogin.SESSION_KEY]["serial"] == second.serial


def test_password_sessions(client: Client, certs: Certs, alice: User, bob: User) -> None:
    client.force_login(alice)
    assert signed_in(get(client, {})) == "alice"  # no certificate: a password session stays
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) == "alice"
    assert not made_by_certificate(client)  # the same person's certificate: left a password session
    client.force_login(bob)
    assert signed_in(get(client, forwarded(nginx_format(certs.alice_pem)))) == "alice"  # alice's key is here
    assert made_by_certificate(client)


def test_disabling_ends_certificate_sessions(client: Client, certs: Certs, settings: Settings) -> None:
    meta = forwarded(nginx_format(certs.alice_pem))
    assert signed_in(get(client, meta)) == "alice"
    settings.ENROLL_CERT_LOGIN_ENABLED = False
    assert signed_in(get(client, meta)) is None
    assert not made_by_certificate(client)


def test_log_out_signs_in_again_with_the_next_request(client: Client, certs: Certs) -> None:
    meta = forwarded(nginx_format(certs.alice_pem))
    assert signed_in(get(client, meta)) == "alice"
    client.post(reverse("accounts:logout"), **meta)
    assert signed_in(get(client, meta)) == "alice"  # the browser presents the certificate again


# --- the profile page ---------------------------------------------------------------------------------------


def test_profile_says_which_certificate_and_that_there_is_no_sign_out(client: Client, certs: Certs) -> None:
    page = get(client, forwarded(nginx_format(certs.alice_pem))).content.decode()
    assert "signed in with certificate" in page
    assert certs.alice.serial in page
    assert certs.alice.ca.name in page
    assert "There is no sign-out with a client certificate" in page


def test_profile_of_a_password_session_says_nothing_about_certificates(client: Client, alice: User) -> None:
    client.force_login(alice)
    page = get(client, {}).content.decode()
    assert "alice" in page
    assert "signed in with certificate" not in page


# --- ASGI: headers spelled with underscores never reach the application ---------------------------------


def asgi_get(headers: list[tuple[bytes, bytes]], *, client_addr: str = "127.0.0.1") -> Any:
    """A raw ASGI request (header names exactly as given), through Django's ASGI request handling."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PROFILE,
        "raw_path": PROFILE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": (client_addr, 50123),
        "server": ("testserver", 80),
    }
    return async_to_sync(AsyncClientHandler())(scope)


def test_asgi_dashed_headers_log_in_and_underscored_ones_do_not(certs: Certs) -> None:
    cert = nginx_format(certs.alice_pem).encode()
    dashed = [(b"x-ssl-client-verify", b"SUCCESS"), (b"x-ssl-client-cert", cert)]
    underscored = [(b"x_ssl_client_verify", b"SUCCESS"), (b"x_ssl_client_cert", cert)]
    mixed = [
        (b"x-ssl-client-verify", b"NONE"),
        (b"x_ssl_client_verify", b"SUCCESS"),
        (b"x-ssl-client-cert", cert),
    ]
    assert asgi_get(dashed).status_code == 200
    assert asgi_get(dashed, client_addr="192.0.2.7").status_code == 302
    assert asgi_get(underscored).status_code == 302
    assert asgi_get(mixed).status_code == 302


def test_repeated_headers_are_refused(certs: Certs) -> None:
    """A header sent twice is joined with a comma (WSGI servers do the same): never SUCCESS, never one PEM."""
    cert = nginx_format(certs.alice_pem).encode()
    twice = [
        (b"x-ssl-client-verify", b"SUCCESS"),
        (b"x-ssl-client-verify", b"SUCCESS"),
        (b"x-ssl-client-cert", cert),
    ]
    assert asgi_get(twice).status_code == 302
    two_certs = [
        (b"x-ssl-client-verify", b"SUCCESS"),
        (b"x-ssl-client-cert", cert),
        (b"x-ssl-client-cert", cert),
    ]
    assert asgi_get(two_certs).status_code == 302


# --- settings from the environment --------------------------------------------------------------------------


@pytest.fixture
def load_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """Run enroll/settings.py afresh with some environment variables (the loaded settings are untouched)."""

    def load(**environ: str) -> dict[str, Any]:
        for name in list(environ):
            monkeypatch.setenv(name, environ[name])
        return runpy.run_path(str(SETTINGS_FILE))

    for name in (
        "ENROLL_CERT_LOGIN_ENABLED",
        "ENROLL_TRUSTED_PROXIES",
        "ENROLL_CERT_LOGIN_VERIFY_HEADER",
        "ENROLL_CERT_LOGIN_CERT_HEADER",
        "ENROLL_CERT_LOGIN_SERIAL_HEADER",
    ):
        monkeypatch.delenv(name, raising=False)
    return load


def test_settings_defaults(load_settings: Callable[..., dict[str, Any]]) -> None:
    loaded = load_settings()
    assert loaded["ENROLL_CERT_LOGIN_ENABLED"] is False
    assert loaded["ENROLL_TRUSTED_PROXIES"] == []
    assert loaded["ENROLL_CERT_LOGIN_VERIFY_HEADER"] == "X-SSL-Client-Verify"
    assert loaded["ENROLL_CERT_LOGIN_CERT_HEADER"] == "X-SSL-Client-Cert"
    assert loaded["ENROLL_CERT_LOGIN_SERIAL_HEADER"] == "X-SSL-Client-Serial"
    middleware = loaded["MIDDLEWARE"]
    auth_index = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")
    assert middleware[auth_index + 1] == "accounts.certlogin.CertificateLoginMiddleware"
    assert loaded["AUTHENTICATION_BACKENDS"] == [
        "axes.backends.AxesBackend",  # lock-out (tests/accounts/test_lockout.py)
        "django.contrib.auth.backends.ModelBackend",
        "accounts.certlogin.CertificateBackend",
    ]


def test_settings_from_the_environment(load_settings: Callable[..., dict[str, Any]]) -> None:
    loaded = load_settings(
        ENROLL_CERT_LOGIN_ENABLED="true",
        ENROLL_TRUSTED_PROXIES=" 127.0.0.1, 10.0.0.0/8 ,::1,unix",
        ENROLL_CERT_LOGIN_VERIFY_HEADER="X-Client-Verify",
    )
    assert loaded["ENROLL_CERT_LOGIN_ENABLED"] is True
    assert loaded["ENROLL_TRUSTED_PROXIES"] == ["127.0.0.1", "10.0.0.0/8", "::1", "unix"]
    assert loaded["ENROLL_CERT_LOGIN_VERIFY_HEADER"] == "X-Client-Verify"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ENROLL_CERT_LOGIN_ENABLED": "maybe"}, "is not a boolean"),
        ({"ENROLL_CERT_LOGIN_ENABLED": "true"}, "ENROLL_TRUSTED_PROXIES is empty"),
        (
            {"ENROLL_TRUSTED_PROXIES": "127.0.0.1,proxy.example.com"},
            "'proxy.example.com' is not an IP address",
        ),
        ({"ENROLL_TRUSTED_PROXIES": "10.0.0.1/8"}, "has host bits set"),
        ({"ENROLL_CERT_LOGIN_VERIFY_HEADER": "X_SSL_Client_Verify"}, "letters, digits and dashes only"),
        ({"ENROLL_CERT_LOGIN_CERT_HEADER": "X-SSL-Client-Cert:"}, "ENROLL_CERT_LOGIN_CERT_HEADER"),
    ],
    ids=["bool", "enabled-without-proxies", "host-name", "host-bits", "underscore-header", "bad-header"],
)
def test_bad_settings_stop_the_start(
    load_settings: Callable[..., dict[str, Any]], environ: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        load_settings(**environ)


def test_settings_given_in_python_are_checked_too(client: Client, settings: Settings) -> None:
    """Another project may set the values in its settings module: the middleware checks them as well."""
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1", "not-an-address"]
    with pytest.raises(ImproperlyConfigured, match="not-an-address"):
        client.get(PROFILE, **forwarded("x"))
    settings.ENROLL_TRUSTED_PROXIES = "127.0.0.1"  # a string is read as a comma-separated list
    settings.ENROLL_CERT_LOGIN_CERT_HEADER = "X_SSL_Client_Cert"
    with pytest.raises(ImproperlyConfigured, match="ENROLL_CERT_LOGIN_CERT_HEADER"):
        client.get(PROFILE, **forwarded("x"))


@pytest.mark.parametrize("path", ["/.well-known/est/cacerts", "/scep?operation=GetCACaps"])
def test_a_device_protocol_request_gets_no_session_and_no_login(
    client: Client, certs: Certs, path: str
) -> None:
    """EST re-enrollment reads the forwarded certificate itself: a device is never signed in to the portal
    (no session, no 'certificate login' audit entry) by presenting its certificate."""
    response = client.get(path, **forwarded(nginx_format(certs.alice_pem)))

    assert not response.wsgi_request.user.is_authenticated
    assert not made_by_certificate(client)
    assert not AuditEntry.objects.filter(event=AuditEvent.CERTIFICATE_LOGIN).exists()
