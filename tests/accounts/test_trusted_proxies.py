"""Trusted front servers (accounts.proxies): one reading of ENROLL_TRUSTED_PROXIES for certificate login,
forwarded headers (X-Forwarded-For, X-Forwarded-Proto) and the rate limits and lock-out.

A dual-stack socket reports an IPv4 peer as ``::ffff:127.0.0.1``; every one of those users must take it
for ``127.0.0.1``, or certificate login trusts the proxy while the forwarded scheme is dropped (pages
redirect to https forever) and every client behind the proxy shares one lock-out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.test import Client, RequestFactory
from django.urls import reverse
from pytest_django.fixtures import Settings

from accounts import proxies
from accounts.ratelimits import address_key, lockout_address
from ca.models import Certificate, CertificateAuthority

MAPPED_PROXY = "::ffff:127.0.0.1"  # 127.0.0.1 as a dual-stack socket reports it
STRONG_PASSWORD = "correct-horse-battery-9"


# --- is this peer a trusted proxy ----------------------------------------------------------------------


def test_it_trusts_an_ipv4_mapped_ipv6_peer() -> None:
    assert proxies.parse(["127.0.0.1"]).trusts(MAPPED_PROXY)


@pytest.mark.parametrize(
    ("setting", "peer", "trusted"),
    [
        pytest.param(["127.0.0.1"], "127.0.0.1", True, id="listed-ipv4"),
        pytest.param(["127.0.0.1"], "::ffff:127.0.0.1", True, id="ipv4-mapped-peer"),
        pytest.param(["127.0.0.1"], "::FFFF:7f00:1", True, id="ipv4-mapped-peer-in-hex"),
        pytest.param(["::ffff:127.0.0.1"], "127.0.0.1", True, id="ipv4-mapped-entry"),
        pytest.param(["::ffff:127.0.0.1"], "::ffff:127.0.0.1", True, id="ipv4-mapped-both"),
        pytest.param(["10.0.0.0/8"], "::ffff:10.20.30.40", True, id="ipv4-mapped-peer-in-network"),
        pytest.param(["::ffff:10.0.0.0/104"], "10.20.30.40", True, id="ipv4-mapped-network"),
        pytest.param(["::ffff:10.0.0.0/104"], "11.0.0.1", False, id="outside-ipv4-mapped-network"),
        pytest.param(["127.0.0.1"], "::ffff:127.0.0.2", False, id="ipv4-mapped-other-address"),
        pytest.param(["127.0.0.1"], "::1", False, id="ipv6-loopback-is-not-ipv4-loopback"),
        pytest.param(["::1"], "::1", True, id="listed-ipv6"),
        pytest.param(["::1"], "127.0.0.1", False, id="ipv4-loopback-is-not-ipv6-loopback"),
        pytest.param(["2001:db8::/32"], "2001:db8:1::5", True, id="ipv6-network"),
        pytest.param(["::/0"], "::ffff:203.0.113.9", True, id="all-ipv6-takes-in-mapped-peers"),
        pytest.param(["::/0"], "203.0.113.9", True, id="all-ipv6-takes-in-ipv4"),
        pytest.param(["127.0.0.1"], " 127.0.0.1 ", True, id="spaces-around-the-peer"),
        pytest.param("127.0.0.1, 10.0.0.0/8", "::ffff:10.0.0.1", True, id="comma-separated-setting"),
        pytest.param([], "127.0.0.1", False, id="nobody-by-default"),
        pytest.param(["127.0.0.1"], "", False, id="unix-socket-not-listed"),
        pytest.param(["unix"], "", True, id="unix-socket-listed"),
        pytest.param(["UNIX"], None, True, id="unix-socket-any-case"),
        pytest.param(["unix"], "127.0.0.1", False, id="unix-trusts-no-address"),
        pytest.param(["127.0.0.1"], "localhost", False, id="a-name-is-not-an-address"),
        pytest.param(["127.0.0.1"], "127.0.0.1:8000", False, id="an-address-with-a-port"),
    ],
)
def test_it_trusts_exactly_the_peers_the_setting_names(
    setting: list[str] | str, peer: str | None, trusted: bool
) -> None:
    assert proxies.parse(setting).trusts(peer) is trusted


@pytest.mark.parametrize(
    "entry", ["localhost", "10.0.0.1/8", "300.1.2.3", "::ffff:10.0.0.1/104", "127.0.0.1:8000", "*"]
)
def test_it_refuses_a_setting_entry_that_is_not_an_address_or_network_naming_it(entry: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="ENROLL_TRUSTED_PROXIES") as raised:
        proxies.parse(["127.0.0.1", entry])
    assert repr(entry) in str(raised.value)


def test_it_parses_the_setting_once_per_value(settings: Settings) -> None:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    first = proxies.current()
    assert proxies.current() is first
    settings.ENROLL_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert proxies.current() is not first
    assert proxies.is_trusted_proxy("::ffff:10.1.2.3")
    assert not proxies.is_trusted_proxy(MAPPED_PROXY)


def test_it_stores_ipv4_mapped_entries_as_ipv4_networks() -> None:
    parsed = proxies.parse(["::ffff:127.0.0.1", "::ffff:10.0.0.0/104", "::1"])
    assert [str(network) for network in parsed.networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]


# --- the client address --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "peer", "forwarded_for", "expected"),
    [
        pytest.param([], "::ffff:203.0.113.9", None, "203.0.113.9", id="direct-ipv4-mapped-client"),
        pytest.param(["127.0.0.1"], MAPPED_PROXY, "203.0.113.9", "203.0.113.9", id="via-ipv4-mapped-proxy"),
        pytest.param(
            ["127.0.0.1"], MAPPED_PROXY, "::ffff:203.0.113.9", "203.0.113.9", id="ipv4-mapped-forwarded"
        ),
        pytest.param(
            ["127.0.0.1"],
            "127.0.0.1",
            "203.0.113.9, ::ffff:127.0.0.1",
            "203.0.113.9",
            id="ipv4-mapped-proxy-entry-skipped",
        ),
        pytest.param(
            ["127.0.0.1"], "::ffff:192.0.2.1", "203.0.113.9", "192.0.2.1", id="untrusted-ipv4-mapped-peer"
        ),
        pytest.param(["127.0.0.1"], MAPPED_PROXY, None, "127.0.0.1", id="proxy-without-header"),
        pytest.param(["127.0.0.1"], MAPPED_PROXY, "junk", "127.0.0.1", id="proxy-with-junk-header"),
        pytest.param(["unix"], "", " 203.0.113.9 ", "203.0.113.9", id="unix-socket-proxy"),
        pytest.param([], "", "203.0.113.9", "unknown", id="unknown"),
    ],
)
def test_the_client_address_treats_ipv4_mapped_addresses_as_ipv4(
    settings: Settings, setting: list[str], peer: str, forwarded_for: str | None, expected: str
) -> None:
    settings.ENROLL_TRUSTED_PROXIES = setting
    request = RequestFactory().get("/", REMOTE_ADDR=peer)
    if forwarded_for is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded_for
    assert proxies.client_address(request) == expected
    assert lockout_address(request) == (None if expected == "unknown" else expected)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("::ffff:203.0.113.9", "203.0.113.9"),  # its own address, not all of ::/64 with every IPv4 client
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("unknown", "unknown"),
    ],
)
def test_the_rate_limit_key_of_an_ipv4_mapped_address_is_its_ipv4_address(address: str, key: str) -> None:
    assert address_key(address) == key


# --- forwarded headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "kept"),
    [
        pytest.param("127.0.0.1", True, id="trusted"),
        pytest.param(MAPPED_PROXY, True, id="trusted-ipv4-mapped"),
        pytest.param("192.0.2.1", False, id="untrusted"),
        pytest.param("::ffff:192.0.2.1", False, id="untrusted-ipv4-mapped"),
        pytest.param("", False, id="unix-socket-not-listed"),
    ],
)
def test_the_middleware_keeps_forwarded_headers_only_from_a_trusted_proxy(
    settings: Settings, peer: str, kept: bool
) -> None:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    seen: dict[str, Any] = {}

    def view(request: HttpRequest) -> HttpResponseBase:
        seen.update(request.META)
        return HttpResponse()

    request = RequestFactory().get(
        "/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https"
    )
    proxies.TrustedProxyMiddleware(view)(request)
    assert ("HTTP_X_FORWARDED_FOR" in seen, "HTTP_X_FORWARDED_PROTO" in seen) == (kept, kept)


@pytest.fixture
def behind_https_proxy(settings: Settings) -> Settings:
    """The portal on HTTPS behind nginx at 127.0.0.1 (what ENROLL_HTTPS and ENROLL_TRUSTED_PROXIES set)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    return settings


@pytest.mark.parametrize("peer", ["127.0.0.1", MAPPED_PROXY])
def test_https_forwarded_by_an_ipv4_mapped_proxy_is_believed_without_a_redirect_loop(
    behind_https_proxy: Settings, db: None, peer: str
) -> None:
    response = Client().get(reverse("accounts:login"), REMOTE_ADDR=peer, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response.wsgi_request.is_secure()
    assert response["Strict-Transport-Security"] == "max-age=3600"


@pytest.mark.parametrize("peer", ["192.0.2.1", "::ffff:192.0.2.1"])
def test_https_said_by_an_untrusted_ipv4_mapped_peer_is_not_believed(
    behind_https_proxy: Settings, db: None, peer: str
) -> None:
    response = Client().get(reverse("accounts:login"), REMOTE_ADDR=peer, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


# --- certificate login ----------------------------------------------------------------------------------


def escaped_pem(certificate: Certificate) -> str:
    """The certificate as nginx's ``$ssl_client_escaped_cert`` forwards it."""
    pem = x509.load_der_x509_certificate(bytes(certificate.der)).public_bytes(serialization.Encoding.PEM)
    return quote(pem.decode(), safe="")


def certificate_headers(certificate: Certificate, peer: str) -> dict[str, Any]:
    """What nginx at ``peer`` forwards for a client that showed ``certificate`` (WSGI spelling)."""
    return {
        "REMOTE_ADDR": peer,
        "HTTP_X_SSL_CLIENT_VERIFY": "SUCCESS",
        "HTTP_X_SSL_CLIENT_CERT": escaped_pem(certificate),
        "HTTP_X_SSL_CLIENT_SERIAL": certificate.serial,
    }


def signed_in_as(response: Any) -> str | None:
    user = response.wsgi_request.user
    return str(user.get_username()) if user.is_authenticated else None


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        pytest.param(MAPPED_PROXY, "alice", id="trusted-ipv4-mapped"),
        pytest.param("::ffff:192.0.2.7", None, id="untrusted-ipv4-mapped"),
    ],
)
def test_certificate_login_trusts_an_ipv4_mapped_proxy(
    settings: Settings,
    ca: CertificateAuthority,
    alice: User,
    issue_for: Callable[..., Certificate],
    peer: str,
    expected: str | None,
) -> None:
    settings.ENROLL_CERT_LOGIN_ENABLED = True
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    response = Client().get(reverse("accounts:profile"), **certificate_headers(issue_for(alice), peer))
    assert response.status_code == (200 if expected else 302)
    assert signed_in_as(response) == expected


def test_certificate_login_and_forwarded_https_agree_about_an_ipv4_mapped_proxy(
    behind_https_proxy: Settings, ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    """The reported bug: the certificate was believed, the scheme was not, and every page redirected."""
    behind_https_proxy.ENROLL_CERT_LOGIN_ENABLED = True
    meta = certificate_headers(issue_for(alice), MAPPED_PROXY)
    response = Client().get(reverse("accounts:profile"), HTTP_X_FORWARDED_PROTO="https", **meta)
    assert response.status_code == 200
    assert signed_in_as(response) == "alice"


# --- rate limits and lock-out ---------------------------------------------------------------------------


def sign_up(name: str, forwarded_for: str) -> int:
    data = {
        "username": name,
        "email": f"{name}@example.com",
        "password1": STRONG_PASSWORD,
        "password2": STRONG_PASSWORD,
    }
    answer = Client().post(
        reverse("accounts:signup"), data, REMOTE_ADDR=MAPPED_PROXY, HTTP_X_FORWARDED_FOR=forwarded_for
    )
    return int(answer.status_code)


def test_rate_limits_count_clients_behind_an_ipv4_mapped_proxy_apart(settings: Settings, db: None) -> None:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.ENROLL_RATE_LIMITS = {"signup": {"address": "1/h"}, "login": {}, "submit": {}, "challenge": {}}
    answers = [
        sign_up("a", "203.0.113.1"),
        sign_up("b", "203.0.113.2"),
        sign_up("c", "::ffff:203.0.113.1"),  # the first client again, as a dual-stack proxy may write it
    ]
    assert answers == [302, 302, 429]


def log_in(username: str, password: str, forwarded_for: str) -> Any:
    return Client().post(
        reverse("accounts:login"),
        {"username": username, "password": password},
        REMOTE_ADDR=MAPPED_PROXY,
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


def test_one_clients_failed_logins_behind_an_ipv4_mapped_proxy_do_not_lock_out_another(
    settings: Settings, alice: User, bob: User
) -> None:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.AXES_FAILURE_LIMIT = 3
    settings.ENROLL_RATE_LIMITS = {}
    for username in ("alice", "carol", "dave"):
        log_in(username, "wrong-password", forwarded_for="203.0.113.7")
    locked = log_in("bob", "bob-password-123", forwarded_for="203.0.113.7")
    assert locked.status_code == 429
    assert "Login locked for now" in locked.content.decode()
    assert log_in("bob", "bob-password-123", forwarded_for="203.0.113.8").status_code == 302
