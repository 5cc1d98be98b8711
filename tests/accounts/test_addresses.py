"""E-mail addresses that can go into a certificate as written (issue 20, item 6; accounts.addresses)."""

from __future__ import annotations

import string
from typing import Any

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings

from accounts import addresses
from accounts.addresses import AddressProblem, certificate_form

PASSWORD = "correct-horse-battery-staple-42"
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Settings) -> None:
    settings.ENROLL_RATE_LIMITS = {}


ACCEPTED = [
    ("alice@example.org", "alice@example.org"),
    ("  alice@example.org ", "alice@example.org"),
    ("Alice.Smith@Example.ORG", "Alice.Smith@example.org"),
    ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
    ("o'brien@example.org", "o'brien@example.org"),
    ("alice@bücher.example", "alice@xn--bcher-kva.example"),
    ("alice@xn--bcher-kva.example", "alice@xn--bcher-kva.example"),
    ("bob@пример.рф", "bob@xn--e1afmkfd.xn--p1ai"),
    ("x" * 64 + "@example.org", "x" * 64 + "@example.org"),
]

REFUSED = [
    ('"<svg/onload=alert(1)>"@example.org', "without quotes"),
    ('"alice"@example.org', "without quotes"),
    ('"a b"@example.org', "without quotes"),
    ("a\\@b@example.org", "one @"),
    ("ålice@example.org", "RFC 8398"),
    ("алиса@пример.рф", "RFC 8398"),
    ("alice@[192.0.2.1]", "host name"),
    ("alice@[IPv6:2001:db8::1]", "host name"),
    ("alice@localhost", "host name"),
    ("alice@192.0.2.1", "host name"),
    ("alice@xn--zz.example", "host name"),
    ("alice@-bad.example", "host name"),
    ("alice@example.org.", "host name"),
    ("alice@exa_mple.org", "host name"),
    (".alice@example.org", "no dot at the start"),
    ("alice.@example.org", "no dot at the start"),
    ("al..ice@example.org", "twice in a row"),
    ("al<ice>@example.org", "only letters"),
    ("al ice@example.org", "only letters"),
    ("x" * 65 + "@example.org", "at most 64"),
    ("a@" + ("b" * 60 + ".") * 5 + "org", "host name"),
    ("alice", "one @"),
]


@pytest.mark.parametrize(("typed", "stored"), ACCEPTED)
def test_addresses_a_certificate_can_carry_are_accepted_in_their_certificate_form(
    typed: str, stored: str
) -> None:
    assert certificate_form(typed) == stored
    x509.RFC822Name(stored)


@pytest.mark.parametrize(("typed", "words"), REFUSED)
def test_addresses_a_certificate_cannot_carry_as_written_are_refused_with_the_reason(
    typed: str, words: str
) -> None:
    with pytest.raises(AddressProblem, match=words.replace(".", r"\.")):
        certificate_form(typed)


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.text(max_size=80) | st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=30), st.text(max_size=30)))
def test_any_text_is_refused_or_becomes_a_plain_ascii_rfc822name(typed: str) -> None:
    if addresses.problem(typed) is not None:
        return
    stored = certificate_form(typed)
    assert stored.isascii()
    assert not any(char in stored for char in '"<>\\ \t\r\n()[],;:')
    assert len(stored) <= addresses.MAX_LENGTH
    assert certificate_form(stored) == stored
    x509.RFC822Name(stored)


dot_atom = st.lists(st.text(alphabet=ATEXT, min_size=1, max_size=10), min_size=1, max_size=4).map(".".join)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda x: "--" not in x)
host = st.lists(label, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "org"]))


@hypothesis_settings(max_examples=300, deadline=None)
@given(dot_atom, host)
def test_every_dot_atom_at_a_host_name_is_accepted_unchanged(local: str, domain: str) -> None:
    assert certificate_form(f"{local}@{domain}") == f"{local}@{domain}"


@pytest.mark.django_db
def test_sign_up_refuses_a_quoted_address_and_stores_the_a_label_form() -> None:
    def sign_up(username: str, email: str) -> Any:
        data = {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD}
        return Client().post(reverse("accounts:signup"), data)

    refused = sign_up("carol", '"<svg/onload=alert(1)>"@example.org')
    assert refused.status_code == 200
    assert "without quotes" in " ".join(refused.context["form"].errors["email"])
    assert not User.objects.exists()
    assert sign_up("dave", "dave@bücher.example").status_code == 302
    assert User.objects.get(username="dave").email == "dave@xn--bcher-kva.example"


@pytest.mark.django_db
def test_email_change_refuses_a_quoted_address(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    answer = client.post(
        reverse("accounts:profile"),
        {"email": '"<svg/onload=alert(1)>"@example.org', "password": "alice-password-123"},
    )
    assert answer.status_code == 200
    assert "without quotes" in " ".join(answer.context["form"].errors["email"])
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert mail.outbox == []
    answer = client.post(
        reverse("accounts:profile"), {"email": "alice@bücher.example", "password": "alice-password-123"}
    )
    assert answer.status_code == 302
    alice.refresh_from_db()
    assert alice.email == "alice@xn--bcher-kva.example"
