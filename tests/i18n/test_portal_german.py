"""Every portal page in German when the browser asks for it: no English sentence left in <main> (the page's
words, not the commands, file names and values it shows), the navigation and footer in German too, and key
German phrases present. English stays the default (tests/enroll read the same pages in English)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import translation
from pytest_django.fixtures import Settings

from ca.models import Certificate, CertificateAuthority, RevocationReason
from enroll import flows
from enroll.challenges import ChallengeProblem, ChallengeRefused
from tests.helpers import make_csr

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("german")]

GERMAN = "de-DE,de;q=0.9"

#: English words that a German page never shows outside commands and values (whole words, lower case).
ENGLISH = re.compile(
    r"\b(the|your|you|with|this|from|when|have|has|were|is|are|not|which|certificate|certificates"
    r"|request|requests|renew|revoke|submit|download|device|devices|key|keys|valid|until|yet|here|only|never"
    r"|and|or|for|of|to|that|it|can|by|on|at|as|recommended)\b"
)
#: What a page shows as is: commands, file names, code and preformatted blocks, scripts, hidden strings.
AS_IS = re.compile(r"<(pre|code|script|kbd|bdi|s)\b.*?</\1>", re.S)
TAG = re.compile(r"<[^>]+>")


def words_of(page: str, part: str = "main") -> str:
    """The visible text of ``part`` (<main>, <nav>, <footer>), without what is shown as is."""
    found = re.search(rf"<{part}\b.*?</{part}>", page, re.S)
    assert found, f"no <{part}>"
    return html.unescape(TAG.sub(" ", AS_IS.sub(" ", found.group(0))))


def english_in(text: str) -> list[str]:
    return sorted(set(ENGLISH.findall(text)))


def german_client(user: User) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=GERMAN)
    client.force_login(user)
    return client


@pytest.fixture
def issued(ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]) -> Certificate:
    certificate = issue_for(alice)
    certificate.device_name = "Arbeitslaptop"
    certificate.save(update_fields=["device_name"])
    return certificate


def portal_pages(certificate: Certificate) -> dict[str, str]:
    request_id = certificate.enrollment_request.pk if hasattr(certificate, "enrollment_request") else None
    pages = {
        "dashboard": reverse("portal:dashboard"),
        "new request": reverse("portal:request-new"),
        "key generator": reverse("portal:keygen"),
        "SPKAC": reverse("portal:request-spkac"),
        "help": reverse("portal:help"),
        "certificate": reverse("portal:certificate-detail", args=[certificate.pk]),
        "certificate for the command line": reverse("portal:certificate-detail", args=[certificate.pk])
        + "?platform=cli",
        "renew": reverse("portal:certificate-renew", args=[certificate.pk]),
        "revoke": reverse("portal:certificate-revoke", args=[certificate.pk]),
        "not found": "/no-such-page/",
    }
    if request_id is not None:
        pages["request"] = reverse("portal:request-detail", args=[request_id])
    return pages


def test_every_portal_page_speaks_german(issued: Certificate, alice: User) -> None:
    client = german_client(alice)
    pending = flows.submit_csr(owner=alice, data=make_csr())
    pages = {**portal_pages(issued), "pending request": reverse("portal:request-detail", args=[pending.pk])}

    left: dict[str, list[str]] = {}
    for name, url in pages.items():
        response = client.get(url)
        assert response.status_code in (200, 404), (name, response.status_code)
        page = response.content.decode()
        assert '<html lang="de">' in page, name
        for part in ("main", "nav", "footer"):
            if found := english_in(words_of(page, part)):
                left[f"{name} <{part}>"] = found
    assert not left, f"English words left on German pages: {left}"


@pytest.mark.parametrize(
    ("name", "phrases"),
    [
        (
            "dashboard",
            ["Meine Zertifikate", "Was als Nächstes zu tun ist", "Gültig", "Zertifikat herunterladen"],
        ),
        ("new request", ["Neue Zertifikatsanforderung", "Ich habe eine Zertifikatsanforderung (CSR)"]),
        ("certificate", ["Installieren auf…", "Ihre Datei", "Seriennummer", "Die CA-Kette", "Kopieren"]),
        ("revoke", ["Dieses Zertifikat sperren?", "Schlüssel kompromittiert", "Zertifikat sperren"]),
        ("help", ["So funktionieren Client-Zertifikate hier", "Die CAs und ihre Sperrlisten"]),
        ("not found", ["Seite nicht gefunden", "Meine Zertifikate"]),
    ],
)
def test_the_pages_say_the_key_german_phrases(
    issued: Certificate, alice: User, name: str, phrases: list[str]
) -> None:
    page = german_client(alice).get(portal_pages(issued)[name]).content.decode()

    for phrase in phrases:
        assert phrase in page, (name, phrase)


def test_a_revoked_certificate_and_its_reason_in_german(issued: Certificate, alice: User) -> None:
    flows.revoke_own_certificate(owner=alice, certificate=issued, reason=RevocationReason.KEY_COMPROMISE)

    page = german_client(alice).get(reverse("portal:certificate-detail", args=[issued.pk])).content.decode()

    assert "Gesperrt" in page
    assert "(Grund: Schlüssel kompromittiert)" in page
    assert "Neues Zertifikat anfordern" in page or "Mit neuem Schlüssel erneuern" in page
    assert not english_in(words_of(page))


def test_a_refused_request_says_why_in_german_with_the_tries_left(
    ca: CertificateAuthority, alice: User, settings: Settings
) -> None:
    settings.RATELIMIT_ENABLE = True
    response = german_client(alice).post(reverse("portal:request-new"), {"csr_text": "hello world"})

    text = words_of(response.content.decode())
    assert response.status_code == 200
    assert "Das ist keine Zertifikatsanforderung" in text
    assert re.search(r"Sie können es in dieser Stunde noch \d+-mal versuchen\.", text), text
    assert not english_in(text)


def test_the_scripts_get_their_words_in_german(issued: Certificate, alice: User) -> None:
    page = german_client(alice).get(reverse("portal:certificate-detail", args=[issued.pk])).content.decode()

    assert 'data-copy="Kopieren"' in page
    assert 'data-copied="Kopiert"' in page
    assert 'data-passphrases-differ="Die beiden Passphrasen unterscheiden sich.' in page
    assert 'data-label="Dunkel"' in page


def test_english_stays_the_default(issued: Certificate, alice: User) -> None:
    client = Client()
    client.force_login(alice)

    page = client.get(reverse("portal:dashboard")).content.decode()

    assert '<html lang="en">' in page
    assert "My certificates" in page
    assert "Meine Zertifikate" not in page


def test_the_429_page_in_german_keeps_the_pasted_request(
    ca: CertificateAuthority, alice: User, settings: Settings
) -> None:
    settings.RATELIMIT_ENABLE = True
    settings.ENROLL_RATE_LIMITS = {
        **settings.ENROLL_RATE_LIMITS,
        "submit": {"address": "60/h", "account": "1/h"},
    }
    client = german_client(alice)
    client.post(reverse("portal:request-new"), {"csr_text": "hello world"})

    response = client.post(reverse("portal:request-new"), {"csr_text": "hello again"})

    text = words_of(response.content.decode())
    assert response.status_code == 429
    assert "Zu viele Versuche: Versuchen Sie es in" in text
    assert "Zu viele Zertifikatsanforderungen für dieses Konto in kurzer Zeit." in text
    assert "hello again" in response.content.decode()
    assert not english_in(text)


@pytest.mark.parametrize("template", ["400.html", "403.html", "403_csrf.html", "404.html", "500.html"])
def test_the_error_pages_speak_german(template: str, alice: User) -> None:
    request = RequestFactory().get("/somewhere/")
    request.user = alice

    with translation.override("de"):
        page = render_to_string(template, request=request)

    assert '<html lang="de">' in page
    assert not english_in(words_of(page))


def test_the_development_mail_page_speaks_german(alice: User, settings: Settings, tmp_path: Path) -> None:
    settings.DEBUG = True
    settings.ENROLL_DEV_MAIL_DIR = str(tmp_path)

    response = german_client(alice).get(reverse("dev-mail"))

    text = words_of(response.content.decode())
    assert "E-Mails, die das Portal gesendet hat" in text
    assert not english_in(text)


def test_what_the_pages_say_after_an_action_is_german(issued: Certificate, alice: User) -> None:
    client = german_client(alice)
    rejected = flows.submit_csr(owner=alice, data=make_csr())
    flows.reject(request_id=rejected.pk, reason="Bitte mit dem Dienstgerät")

    named = client.post(
        reverse("portal:certificate-device", args=[issued.pk]), {"device_name": "Tablet"}, follow=True
    )
    revoked = client.post(
        reverse("portal:certificate-revoke", args=[issued.pk]),
        {"reason": RevocationReason.SUPERSEDED.value, "confirm": "on"},
        follow=True,
    )
    dashboard = client.get(reverse("portal:dashboard"))

    assert "Gerätename gespeichert: Tablet." in words_of(named.content.decode())
    assert f"Zertifikat {issued.serial} ist gesperrt." in words_of(revoked.content.decode())
    board = words_of(dashboard.content.decode())
    assert f"Ihre letzte Anforderung #{rejected.pk} wurde abgelehnt: Bitte mit dem Dienstgerät" in board
    assert "Sie haben kein gültiges Zertifikat." in board
    for response in (named, revoked, dashboard):
        assert not english_in(words_of(response.content.decode()))


def test_a_refused_device_name_says_why_in_german(issued: Certificate, alice: User) -> None:
    response = german_client(alice).post(
        reverse("portal:certificate-device", args=[issued.pk]), {"device_name": "Arbeits\u202elaptop"}
    )

    text = words_of(response.content.decode())
    assert response.status_code == 400
    assert "Ein Gerätename ist einfacher Text in einer Zeile, aber dieser enthält ein unsichtbares" in text
    assert not english_in(text)


def test_a_key_of_another_account_is_refused_in_german(
    ca: CertificateAuthority, alice: User, bob: User, issue_for: Callable[..., Certificate]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issue_for(bob, make_csr(key))

    response = german_client(alice).post(reverse("portal:request-new"), {"csr_text": make_csr(key).decode()})

    text = words_of(response.content.decode())
    assert "Dieser Schlüssel gehört zu einem anderen Konto" in text
    assert not english_in(text)


def test_an_spkac_challenge_refusal_in_german() -> None:
    refused = ChallengeRefused(ChallengeProblem.EXPIRED)

    with translation.override("de"):
        german = str(refused)
    english = str(refused)

    assert german.startswith("Die Challenge des SPKAC ist abgelaufen (eine Challenge gilt 30 Minuten)")
    assert english.startswith("The SPKAC's challenge expired (a challenge works for 30 minutes)")


def test_the_device_enrollment_page_speaks_german(ca: CertificateAuthority, alice: User) -> None:
    client = german_client(alice)

    made = client.post(reverse("portal:devices"), {"device_name": "buero-drucker"})
    listed = client.get(reverse("portal:devices"))

    made_text = words_of(made.content.decode())
    assert "Ihr Registrierungscode für buero-drucker" in made_text
    assert "Kopieren Sie ihn jetzt: Er wird nur dieses eine Mal gezeigt." in made_text
    listed_text = words_of(listed.content.decode())
    assert "Ihre Registrierungscodes" in listed_text
    assert "Aktiv" in listed_text
    assert "0 von 1" in listed_text
    assert re.search(r"läuft in \d+ Stunden? ab", listed_text), listed_text
    for text in (made_text, listed_text):
        assert not english_in(text)
