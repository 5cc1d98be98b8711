"""Rate limits (accounts.ratelimits): sign-up, login, CSR/SPKAC submission and SPKAC challenges, per client
address and per account, 429 with Retry-After, a shared database store, and the client address rules."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_ratelimit.core import get_usage
from pytest_django.fixtures import Settings

from accounts.proxies import client_address
from accounts.ratelimits import RateLimitCache, peek
from accounts.services import mark_email_verified
from ca.models import Certificate
from enroll import env
from enroll.models import EnrollmentRequest
from tests.conftest import make_csr

STRONG_PASSWORD = "correct-horse-battery-9"


def limits(**rates: dict[str, str]) -> dict[str, dict[str, str]]:
    """ENROLL_RATE_LIMITS with only the given actions limited."""
    return {"signup": {}, "login": {}, "submit": {}, "challenge": {}, **rates}


def signup(client: Client, n: int, address: str = "192.0.2.1") -> Any:
    return client.post(
        reverse("accounts:signup"),
        {
            "username": f"user{n}",
            "email": f"user{n}@example.com",
            "password1": STRONG_PASSWORD,
            "password2": STRONG_PASSWORD,
        },
        REMOTE_ADDR=address,
    )


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- what each limited action looks like -------------------------------------------------------------

Act = Callable[[Client, User, str], Any]


def paste_csr(client: Client, user: User, address: str) -> Any:
    return client.post(reverse("portal:request-new"), {"csr_text": make_csr().decode()}, REMOTE_ADDR=address)


def browser_csr(client: Client, user: User, address: str) -> Any:
    return client.post(reverse("portal:keygen-submit"), {"csr": make_csr().decode()}, REMOTE_ADDR=address)


def spkac_post(client: Client, user: User, address: str) -> Any:
    return client.post(
        reverse("portal:request-spkac"), {"spkac_text": "SPKAC=bm90aGluZw=="}, REMOTE_ADDR=address
    )


def spkac_challenge(client: Client, user: User, address: str) -> Any:
    return client.get(reverse("portal:request-spkac"), REMOTE_ADDR=address)


def renewal(client: Client, user: User, address: str) -> Any:
    certificate = Certificate.objects.filter(owner=user).first()
    assert certificate is not None
    return client.post(
        reverse("portal:certificate-renew", args=[certificate.pk]),
        {"csr_text": make_csr().decode()},
        REMOTE_ADDR=address,
    )


PORTAL_ACTIONS: list[tuple[str, str, Act]] = [
    ("submit", "paste", paste_csr),
    ("submit", "browser", browser_csr),
    ("submit", "spkac", spkac_post),
    ("submit", "renewal", renewal),
    ("challenge", "challenge", spkac_challenge),
]


@pytest.fixture
def alice_with_certificate(alice: User, ca: Any, issue_for: Callable[..., Any]) -> User:
    issue_for(alice)
    return alice


# --- sign-up and login -------------------------------------------------------------------------------


def test_it_answers_429_with_retry_after_once_sign_ups_from_one_address_exceed_the_limit(
    client: Client, settings: Settings, db: None
) -> None:
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "3/h"})
    for n in range(3):
        assert signup(Client(), n).status_code == 302
    refused = signup(client, 3)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    page = refused.content.decode()
    assert "Too many sign-ups from your network address" in page
    assert "try again in" in page
    assert not User.objects.filter(username="user3").exists()
    assert signup(Client(), 4, address="192.0.2.2").status_code == 302  # another address is not affected


def test_it_lets_sign_ups_through_again_once_the_period_is_over(settings: Settings, db: None) -> None:
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "1/m"})
    with time_machine.travel(dt.datetime(2026, 3, 1, 12, 0, 30, tzinfo=dt.UTC), tick=False) as clock:
        assert signup(Client(), 0).status_code == 302
        refused = signup(Client(), 1)
        assert refused.status_code == 429
        clock.shift(int(refused["Retry-After"]))
        assert signup(Client(), 1).status_code == 302


def test_the_sign_up_form_itself_is_not_counted(client: Client, settings: Settings, db: None) -> None:
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "1/h"})
    for _ in range(5):
        assert client.get(reverse("accounts:signup")).status_code == 200


@pytest.mark.parametrize(
    ("scope", "addresses", "usernames", "words"),
    [
        ("address", ["192.0.2.7"] * 4, ["alice", "bob", "carol", "alice"], "from your network address"),
        (
            "account",
            ["192.0.2.7", "192.0.2.8", "192.0.2.9", "192.0.2.10"],
            ["Alice", "alice", " ALICE", "alice"],
            "for this account",
        ),
    ],
)
def test_it_limits_login_attempts_per_address_and_per_username(
    settings: Settings, alice: User, scope: str, addresses: list[str], usernames: list[str], words: str
) -> None:
    settings.ENROLL_RATE_LIMITS = limits(login={scope: "3/10m"})
    url = reverse("accounts:login")
    for address, username in zip(addresses[:3], usernames[:3], strict=True):
        answer = Client().post(url, {"username": username, "password": "not-it"}, REMOTE_ADDR=address)
        assert answer.status_code == 200
    refused = Client().post(
        url, {"username": usernames[3], "password": "alice-password-123"}, REMOTE_ADDR=addresses[3]
    )
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert f"Too many login attempts {words}" in refused.content.decode()


# --- requests and challenges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "name", "act"), PORTAL_ACTIONS, ids=[name for _, name, _ in PORTAL_ACTIONS]
)
def test_it_limits_each_way_of_proving_a_key_per_account_whatever_the_address(
    settings: Settings, alice_with_certificate: User, action: str, name: str, act: Act
) -> None:
    settings.ENROLL_RATE_LIMITS = limits(**{action: {"account": "2/h"}})
    client = logged_in(alice_with_certificate)
    for n in range(2):
        assert act(client, alice_with_certificate, f"198.51.100.{n}").status_code != 429
    before = EnrollmentRequest.objects.count()
    refused = act(client, alice_with_certificate, "198.51.100.99")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert EnrollmentRequest.objects.count() == before
    text = refused.json()["error"] if name == "browser" else refused.content.decode()
    assert "for this account" in text


@pytest.mark.parametrize(
    ("action", "name", "act"), PORTAL_ACTIONS, ids=[name for _, name, _ in PORTAL_ACTIONS]
)
def test_it_limits_each_way_of_proving_a_key_per_address_whatever_the_account(
    settings: Settings, ca: Any, issue_for: Callable[..., Any], action: str, name: str, act: Act
) -> None:
    settings.ENROLL_RATE_LIMITS = limits(**{action: {"address": "2/h"}})
    users = [User.objects.create_user(f"u{n}", f"u{n}@example.com", STRONG_PASSWORD) for n in range(3)]
    for user in users:
        mark_email_verified(user)
        issue_for(user)
    for user in users[:2]:
        assert act(logged_in(user), user, "203.0.113.5").status_code != 429
    refused = act(logged_in(users[2]), users[2], "203.0.113.5")
    assert refused.status_code == 429
    text = refused.json()["error"] if name == "browser" else refused.content.decode()
    assert "from your network address" in text
    assert act(logged_in(users[2]), users[2], "203.0.113.6").status_code != 429


def test_the_browser_key_page_gets_json_it_can_show(settings: Settings, alice: User) -> None:
    settings.ENROLL_RATE_LIMITS = limits(submit={"account": "1/h"})
    client = logged_in(alice)
    assert browser_csr(client, alice, "192.0.2.1").json()["ok"] is True
    refused = browser_csr(client, alice, "192.0.2.1")
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["ok"] is False
    assert "Please try again in" in refused.json()["error"]


def test_nothing_is_limited_when_rate_limits_are_turned_off(settings: Settings, db: None) -> None:
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "1/h"})
    settings.RATELIMIT_ENABLE = False  # what ENROLL_RATE_LIMITS_ENABLED=false sets
    for n in range(4):
        assert signup(Client(), n).status_code == 302


# --- the client address ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ([], "192.0.2.1", None, "192.0.2.1"),
        ([], "192.0.2.1", "203.0.113.9", "192.0.2.1"),  # nobody trusted: the header means nothing
        (["127.0.0.1"], "192.0.2.1", "203.0.113.9", "192.0.2.1"),  # not from the proxy
        (["127.0.0.1"], "127.0.0.1", "203.0.113.9", "203.0.113.9"),
        (["127.0.0.1"], "127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the proxy's own entry
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", "203.0.113.9, 10.1.2.3", "203.0.113.9"),  # two proxies
        (["127.0.0.1"], "127.0.0.1", "2001:db8::1", "2001:db8::1"),
        (["127.0.0.1"], "127.0.0.1", "not-an-address", "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", "", "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", None, "127.0.0.1"),
        (["unix"], "", "203.0.113.9", "203.0.113.9"),
        ([], "", "203.0.113.9", "unknown"),
    ],
)
def test_the_client_address_is_the_peer_or_what_a_trusted_proxy_forwarded(
    settings: Settings, trusted: list[str], peer: str, forwarded: str | None, expected: str
) -> None:
    settings.ENROLL_TRUSTED_PROXIES = trusted
    request = RequestFactory().get("/", REMOTE_ADDR=peer)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_address(request) == expected


def test_ipv6_addresses_of_one_64_count_as_one(settings: Settings, db: None) -> None:
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "1/h"})
    addresses = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"]
    answers = [signup(Client(), n, address=address).status_code for n, address in enumerate(addresses)]
    assert answers == [302, 429, 302]


def test_addresses_forwarded_by_a_trusted_proxy_are_counted_apart(settings: Settings, db: None) -> None:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "1/h"})
    url = reverse("accounts:signup")

    def from_behind_the_proxy(name: str, forwarded_for: str) -> int:
        data = {
            "username": name,
            "email": f"{name}@example.com",
            "password1": STRONG_PASSWORD,
            "password2": STRONG_PASSWORD,
        }
        answer = Client().post(url, data, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
        return int(answer.status_code)

    first = from_behind_the_proxy("a", "203.0.113.1")
    other = from_behind_the_proxy("b", "203.0.113.2")
    again = from_behind_the_proxy("c", "203.0.113.1")
    assert (first, other, again) == (302, 302, 429)


def test_a_client_cannot_dodge_the_limit_with_its_own_forwarded_header(settings: Settings, db: None) -> None:
    settings.ENROLL_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.ENROLL_RATE_LIMITS = limits(signup={"address": "1/h"})
    answers = [
        signup(Client(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}"), n, address="192.0.2.50").status_code
        for n in range(2)
    ]
    assert answers == [302, 429]


# --- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10/h", "10/h"), (" 5/M ", "5/m"), ("30/10m", "30/10m"), ("1/d", "1/d"), ("off", ""), ("OFF", "")],
)
def test_rates_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("ENROLL_RATE_LIMIT_TEST", value)
    assert env.get_rate("ENROLL_RATE_LIMIT_TEST", default="1/s") == expected


@pytest.mark.parametrize(
    "value", ["10", "ten/h", "0/h", "10/0m", "10/w", "10/2d", "10/h/h", "-1/h", "10 / h"]
)
def test_it_refuses_a_bad_rate_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ENROLL_RATE_LIMIT_TEST", value)
    with pytest.raises(ImproperlyConfigured, match="ENROLL_RATE_LIMIT_TEST"):
        env.get_rate("ENROLL_RATE_LIMIT_TEST", default="1/s")


# --- the shared store -----------------------------------------------------------------------------------


def test_the_counters_live_in_a_database_table_every_process_shares(db: None, settings: Settings) -> None:
    cache = caches["ratelimit"]
    assert isinstance(cache, RateLimitCache)
    another_process = RateLimitCache(settings.CACHES["ratelimit"]["LOCATION"], settings.CACHES["ratelimit"])
    cache.add("k", 1)
    assert another_process.incr("k") == 2
    assert cache.incr("k", 3) == 5
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")


@pytest.mark.postgres
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_increments_are_not_lost() -> None:
    """Eight threads (eight database connections) counting at once: every increment counts."""
    cache = caches["ratelimit"]
    cache.add("shared", 0)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def count() -> None:
        from django.db import connections

        try:
            start.wait()
            for _ in range(25):
                caches["ratelimit"].incr("shared")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.get("shared") == 200


def test_peek_reads_the_counters_get_usage_keeps_without_writing(db: None, settings: Settings) -> None:
    """The device lock-out's look (accounts.ratelimits.peek): the same counts as django-ratelimit's, all
    in one SELECT, never a write (get_usage without counting adds a zero row in a write transaction)."""
    settings.RATELIMIT_ENABLE = True
    group, rate = "enroll.device_code.address", "5/h"
    for _ in range(3):
        get_usage(RequestFactory().get("/"), group=group, key=lambda _g, _r: "address:192.0.2.7", rate=rate,
                  increment=True)  # fmt: skip
    counters = {"counted": (group, "address:192.0.2.7", rate), "never": (group, "address:192.0.2.8", rate)}

    with CaptureQueriesContext(connection) as queries:
        seen = peek(counters)

    assert (seen["counted"].count, seen["counted"].limit, seen["counted"].reached) == (3, 5, False)
    assert (seen["never"].count, seen["never"].reached) == (0, False)
    assert 0 <= seen["counted"].time_left <= 3600
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["SELECT"]
    settings.RATELIMIT_ENABLE = False
    assert peek(counters) == {}
