"""The new-request page and the pages around it (SPKAC, key generation, help), without a browser:

- the three ways to a certificate are offered as equals (three cards of the same make, each with one line
  saying when it suits and one button);
- command blocks never wrap inside an option (request.css: ``white-space: pre``, scrolling sideways, each
  block focusable for the keyboard) and get a copy button (static/portal/copy.js, with a live region);
- one file-naming scheme on every page (``<username>.key``, ``.csr``, ``.p12``);
- no operator ``manage.py`` command on a person's page; the help names the browser-made key.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from enroll.models import EnrollmentRequest


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


class Cards(HTMLParser):
    """The cards inside ``#request-ways``: each card's heading, paragraphs and links (text and href)."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, list[str]]] = []
        self._in_ways = 0
        self._depth = 0
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id") == "request-ways":
            self._in_ways = self._depth + 1
        if tag not in ("br", "img", "input", "meta", "link"):
            self._depth += 1
        if not self._in_ways:
            return
        if tag == "section":
            self.cards.append({"heading": [], "p": [], "a": [], "href": []})
        elif self.cards and tag in ("h2", "p", "a"):
            self._field = "heading" if tag == "h2" else tag
            self.cards[-1][self._field].append("")
            if tag == "a":
                self.cards[-1]["href"].append(attributes.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("br", "img", "input", "meta", "link"):
            self._depth -= 1
        if self._in_ways and self._depth < self._in_ways:
            self._in_ways = 0
        if tag in ("h2", "p", "a"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._in_ways and self._field and self.cards:
            self.cards[-1][self._field][-1] += " ".join(data.split())


def cards_of(html: str) -> list[dict[str, list[str]]]:
    parser = Cards()
    parser.feed(html)
    return parser.cards


def test_it_offers_the_three_ways_as_equal_cards(alice: User) -> None:
    page = logged_in(alice).get(reverse("portal:request-new")).content.decode()

    cards = cards_of(page)

    assert [card["heading"] for card in cards] == [
        ["I have a certificate request (CSR)"],
        ["Make the key in this browser"],
        ["Legacy: SPKAC from openssl spkac / <keygen>"],
    ]
    assert [card["href"] for card in cards] == [
        ["#csr-form"],
        [reverse("portal:keygen")],
        [reverse("portal:request-spkac")],
    ]
    for card in cards:  # the same make: one line on when it suits, one button
        assert len(card["p"]) == 1
        assert len(card["a"]) == 1
    assert [card["p"][0].split(" ")[0] for card in cards] == ["Best", "Best", "Only"]
    assert page.count('class="btn btn-primary"') >= 3
    assert 'id="csr-form"' in page


def test_a_person_with_an_unverified_address_sees_why_not_the_ways(alice: User) -> None:
    alice.profile.verified_email = ""
    alice.profile.save()

    page = logged_in(alice).get(reverse("portal:request-new")).content.decode()

    assert 'id="request-ways"' not in page


@pytest.mark.parametrize("name", ["portal:request-new", "portal:request-spkac", "portal:help"])
def test_command_blocks_are_focusable_and_get_copy_buttons_and_no_wrapping(alice: User, name: str) -> None:
    page = logged_in(alice).get(reverse(name)).content.decode()

    blocks = re.findall(r"<pre class=\"command[^\"]*\"[^>]*>", page)
    assert blocks
    assert all('tabindex="0"' in block for block in blocks)
    assert '<script src="/static/portal/copy.js"></script>' in page
    assert '<link rel="stylesheet" href="/static/portal/request.css">' in page


def test_the_stylesheet_keeps_commands_on_one_line_and_the_script_announces_copies() -> None:
    css = Path(str(finders.find("portal/request.css"))).read_text(encoding="utf-8")
    script = Path(str(finders.find("portal/copy.js"))).read_text(encoding="utf-8")

    rule = re.search(r"pre\.command \{([^}]*)\}", css)
    assert rule is not None
    assert "white-space: pre;" in rule.group(1)
    assert "overflow-x: auto;" in rule.group(1)
    assert "navigator.clipboard" in script
    assert 'document.execCommand("copy")' in script  # the fallback
    assert 'setAttribute("aria-live", "polite")' in script
    assert '"Copied"' in script


KEY_FILE = re.compile(r"[\w.-]+\.(?:key|csr|p12)\b")


@pytest.mark.parametrize("name", ["portal:request-new", "portal:request-spkac", "portal:help"])
def test_every_page_names_the_files_after_the_account(alice: User, name: str) -> None:
    page = logged_in(alice).get(reverse(name)).content.decode()

    files = set(KEY_FILE.findall(page))

    assert files
    assert files <= {"alice.key", "alice.csr", "alice.p12", "alice-keystore.p12"}, files


def test_keytools_key_store_is_not_the_p12_the_certificate_page_makes(alice: User) -> None:
    """keytool keeps the key in a key store; the certificate page's `openssl pkcs12 -out alice.p12` must
    not overwrite it."""
    page = logged_in(alice).get(reverse("portal:request-new")).content.decode()

    assert "-keystore alice-keystore.p12" in page
    assert "-keystore alice.p12" not in page


def test_the_spkac_page_shows_no_operator_commands(alice: User) -> None:
    page = logged_in(alice).get(reverse("portal:request-spkac")).content.decode()

    assert "manage.py" not in page
    assert "submit_spkac" not in page
    assert "openssl spkac -key alice.key -challenge" in page


def test_the_operator_docs_have_the_spkac_commands() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")

    assert "python manage.py spkac_challenge --user alice" in docs
    assert "python manage.py submit_spkac --user alice alice.spkac" in docs


def test_the_help_names_making_the_key_in_the_browser(client: Client, db: None) -> None:
    page = client.get(reverse("portal:help")).content.decode()

    assert f'<a href="{reverse("portal:keygen")}">Make the key in this browser</a>' in page


def test_a_refused_paste_keeps_the_page_and_says_what_is_wrong(alice: User) -> None:
    response = logged_in(alice).post(reverse("portal:request-new"), {"csr_text": "hello world"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "This is not a certificate request." in page
    assert "altered" not in page
    assert 'id="request-ways"' in page
    assert not EnrollmentRequest.objects.exists()
