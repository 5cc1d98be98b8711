"""Submission limits as the person sees them: every refused submission (a pasted CSR, an SPKAC, a key made
in the browser) says how many tries are left this hour, because refusals count too (parsing costs the
server); the 429 page gives one honest time, rounded up, from the limiter, and shows the pasted request
back so that it is not lost (never a pasted private key)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from accounts.ratelimits import Allowance, period_words, wait_words
from ca.models import CertificateAuthority
from enroll import flows
from enroll.models import EnrollmentRequest
from tests.conftest import make_csr

ADDRESS = "192.0.2.7"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def limited(settings: Settings) -> Settings:
    settings.ENROLL_RATE_LIMITS = {
        **settings.ENROLL_RATE_LIMITS,
        "submit": {"address": "60/h", "account": "3/h"},
    }
    return settings


def paste(client: Client, text: str, **extra: str) -> Any:
    return client.post(reverse("portal:request-new"), {"csr_text": text, **extra}, REMOTE_ADDR=ADDRESS)


def spkac(client: Client, text: str) -> Any:
    return client.post(reverse("portal:request-spkac"), {"spkac_text": text}, REMOTE_ADDR=ADDRESS)


def browser(client: Client, text: str) -> Any:
    return client.post(reverse("portal:keygen-submit"), {"csr": text}, REMOTE_ADDR=ADDRESS)


def tries_left(response: Any) -> str:
    if response["Content-Type"].startswith("application/json"):
        return str(response.json()["tries_left"])
    found = re.search(r'id="tries-left">([^<]*)<', response.content.decode())
    return found.group(1) if found else ""


@pytest.mark.parametrize(
    ("submit", "bad_input"),
    [
        pytest.param(paste, "hello world", id="pasted-csr-that-is-no-request"),
        pytest.param(paste, "", id="pasted-nothing"),
        pytest.param(spkac, "SPKAC=bm90aGluZw==", id="spkac"),
        pytest.param(browser, "-----BEGIN CERTIFICATE REQUEST-----\nMIIB", id="key-made-in-the-browser"),
    ],
)
def test_it_says_after_every_refusal_how_many_tries_are_left_this_hour(
    limited: Settings, alice: User, submit: Any, bad_input: str
) -> None:
    client = logged_in(alice)

    said = [tries_left(submit(client, bad_input)) for _ in range(3)]

    assert said == [
        "You can try 2 more times this hour.",
        "You can try once more this hour.",
        said[2],
    ]
    assert said[2].startswith("That was your last try this hour: the next one is possible in ")
    assert submit(client, bad_input).status_code == 429  # the refusals counted
    assert not EnrollmentRequest.objects.exists()


def test_the_browser_endpoint_puts_the_tries_left_into_its_error_too(limited: Settings, alice: User) -> None:
    answer = browser(logged_in(alice), "hello world").json()

    assert answer["ok"] is False
    assert answer["code"] == "not_a_request"
    assert answer["error"].endswith("You can try 2 more times this hour.")


def test_a_successful_submission_says_nothing_about_tries(limited: Settings, alice: User) -> None:
    response = paste(logged_in(alice), make_csr().decode())

    assert response.status_code == 302
    assert EnrollmentRequest.objects.count() == 1


def test_nothing_is_said_when_rate_limits_are_off(settings: Settings, alice: User) -> None:
    settings.RATELIMIT_ENABLE = False

    assert tries_left(paste(logged_in(alice), "hello world")) == ""


def test_the_429_page_is_consistent_and_shows_the_pasted_request_back(limited: Settings, alice: User) -> None:
    client = logged_in(alice)
    for _ in range(3):
        paste(client, "hello world")
    csr = make_csr().decode()

    refused = paste(client, csr, device_name="Work laptop")

    assert refused.status_code == 429
    page = refused.content.decode()
    wait = wait_words(int(refused["Retry-After"]))
    assert f"Too many attempts: try again in {wait}" in page
    assert "wait a moment" not in page
    assert page.count(wait) >= 2  # the heading and the sentence name the same time
    assert csr.strip().splitlines()[1] in page  # the pasted request, kept
    assert 'name="csr_text"' in page
    assert 'name="device_name" value="Work laptop"' in page
    assert f'action="{reverse("portal:request-new")}"' in page
    assert not EnrollmentRequest.objects.exists()


def test_the_429_page_never_shows_a_pasted_private_key_back(limited: Settings, alice: User) -> None:
    client = logged_in(alice)
    for _ in range(3):
        paste(client, "hello world")
    key = (
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
        "-----END PRIVATE KEY-----\n"
    )

    refused = paste(client, key)

    assert refused.status_code == 429
    assert "MIGHAgEAMBMG" not in refused.content.decode()
    assert 'name="csr_text"' not in refused.content.decode()


def test_the_429_page_of_the_spkac_page_keeps_the_pasted_spkac(limited: Settings, alice: User) -> None:
    client = logged_in(alice)
    for _ in range(3):
        spkac(client, "SPKAC=bm90aGluZw==")

    refused = spkac(client, "SPKAC=c29tZXRoaW5nIGVsc2U=")

    assert refused.status_code == 429
    assert "SPKAC=c29tZXRoaW5nIGVsc2U=" in refused.content.decode()
    assert 'name="spkac_text"' in refused.content.decode()


@pytest.mark.parametrize(
    ("allowance", "words"),
    [
        (Allowance(left=5, rate="20/h", resets_in=600), "You can try 5 more times this hour."),
        (Allowance(left=1, rate="20/h", resets_in=600), "You can try once more this hour."),
        (
            Allowance(left=0, rate="20/h", resets_in=1920),
            "That was your last try this hour: the next one is possible in 32 minutes.",
        ),
        (
            Allowance(left=0, rate="20/h", resets_in=1861),
            "That was your last try this hour: the next one is possible in 32 minutes.",
        ),
        (Allowance(left=3, rate="10/d", resets_in=600), "You can try 3 more times today."),
        (Allowance(left=3, rate="30/10m", resets_in=60), "You can try 3 more times in these 10 minutes."),
    ],
)
def test_the_allowance_in_words(allowance: Allowance, words: str) -> None:
    assert allowance.message == words


@pytest.mark.parametrize(
    ("rate", "words"),
    [("20/h", "this hour"), ("1/m", "this minute"), ("5/d", "today"), ("30/10m", "in these 10 minutes")],
)
def test_the_period_in_words(rate: str, words: str) -> None:
    assert period_words(rate) == words


def test_the_renewal_page_says_the_tries_left_and_its_429_page_keeps_the_pasted_request(
    limited: Settings, ca: CertificateAuthority, alice: User
) -> None:
    issued = flows.approve(request_id=flows.submit_csr(owner=alice, data=make_csr()).pk)
    assert issued.certificate is not None
    client = logged_in(alice)
    url = reverse("portal:certificate-renew", args=[issued.certificate.pk])

    said = [tries_left(client.post(url, {"csr_text": "hello world"}, REMOTE_ADDR=ADDRESS)) for _ in range(3)]
    csr = make_csr().decode()
    refused = client.post(url, {"csr_text": csr}, REMOTE_ADDR=ADDRESS)

    assert said[:2] == ["You can try 2 more times this hour.", "You can try once more this hour."]
    assert refused.status_code == 429
    assert csr.strip().splitlines()[1] in refused.content.decode()
    assert f'action="{url}"' in refused.content.decode()
    assert EnrollmentRequest.objects.count() == 1  # only the renewed certificate's own request
