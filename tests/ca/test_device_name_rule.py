"""The device-name rule (ca.models): at most 64 printable characters on one line, spaces around stripped.

One rule for every path (portal forms, command line, the models' validator); the paths are tested in
tests/enroll/test_device_names.py.
"""

from __future__ import annotations

import unicodedata

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from ca.models import (
    DEVICE_NAME_MAX_LENGTH,
    Certificate,
    clean_device_name,
    device_name_problem,
    validate_device_name,
)

#: Characters a device name may never contain, whatever else is around them.
REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


@pytest.mark.parametrize(
    ("given_name", "stored"),
    [
        ("", ""),
        ("   ", ""),
        ("work laptop", "work laptop"),
        ("  work laptop  ", "work laptop"),
        ("Anna\u2019s iPhone 15", "Anna\u2019s iPhone 15"),
        ("Büro-PC (Zimmer 3)", "Büro-PC (Zimmer 3)"),
        ("ノートパソコン", "ノートパソコン"),
        ("📱 phone", "📱 phone"),
        ("e\u0301cran", "\u00e9cran"),  # NFC: the stored form of an accented letter is one character
        ("x" * DEVICE_NAME_MAX_LENGTH, "x" * DEVICE_NAME_MAX_LENGTH),
        (None, ""),
    ],
)
def test_it_accepts_printable_names_and_strips_the_spaces_around_them(
    given_name: str | None, stored: str
) -> None:
    assert clean_device_name(given_name) == stored


@pytest.mark.parametrize(
    ("bad_name", "words"),
    [
        ("x" * (DEVICE_NAME_MAX_LENGTH + 1), "at most 64 characters; this one has 65"),
        ("work\nlaptop", "control character"),
        ("work\r\nlaptop", "control character"),
        ("work\tlaptop", "control character"),
        ("work\x00laptop", "control character"),
        ("work\x7flaptop", "control character"),
        ("work\x85laptop", "control character"),
        ("work\u2028laptop", "line break"),
        ("work\u2029laptop", "paragraph break"),
        ("phone\u202egnp.exe", "text-direction override"),
        ("phone\u2066x\u2069", "invisible formatting character"),
        ("lap\u200btop", "invisible formatting character"),
        ("lap\ufefftop", "invisible formatting character"),
        ("lap\ud800top", "unpaired surrogate"),
        ("lap\ue000top", "private-use"),
        ("lap\U000e0001top", "invisible formatting character"),
    ],
)
def test_it_refuses_long_or_unprintable_names_saying_what_to_change(bad_name: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        clean_device_name(bad_name)

    (message,) = refused.value.messages
    assert words in message
    assert message.startswith("A device name ")
    assert "Shorten it" in message or "Remove it" in message


def test_the_message_names_the_character_and_where_it_is() -> None:
    problem = device_name_problem("ab\u202ecd")

    assert problem is not None
    assert "U+202E, character 3" in problem


@pytest.mark.parametrize("stored", [" laptop", "laptop ", "\u3000laptop"])
def test_the_field_validator_refuses_spaces_around_a_stored_name(stored: str) -> None:
    with pytest.raises(ValidationError, match="may not start or end with a space"):
        validate_device_name(stored)


def test_the_certificate_field_runs_the_rule() -> None:
    field = Certificate._meta.get_field("device_name")

    with pytest.raises(ValidationError):
        field.clean("a\u202eb", None)
    assert field.clean("laptop", None) == "laptop"


@given(st.text(max_size=200))
def test_for_any_text_it_stores_a_valid_name_or_refuses_in_words(text: str) -> None:
    try:
        name = clean_device_name(text)
    except ValidationError as refused:
        (message,) = refused.messages
        assert message.startswith("A device name ")
        return
    assert len(name) <= DEVICE_NAME_MAX_LENGTH
    assert name == name.strip()
    assert not {unicodedata.category(char) for char in name} & REFUSED_CATEGORIES
    assert unicodedata.is_normalized("NFC", name)
    assert clean_device_name(name) == name  # cleaning is idempotent
    validate_device_name(name)


@given(
    st.text(
        alphabet=st.characters(exclude_categories=("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")),
        min_size=1,
        max_size=DEVICE_NAME_MAX_LENGTH,
    )
)
def test_any_short_printable_text_is_accepted(text: str) -> None:
    name = clean_device_name(text)

    assert name == unicodedata.normalize("NFC", text.strip())


@given(
    st.text(max_size=20),
    st.characters(categories=("Cc", "Cf", "Zl", "Zp", "Co")),
    st.text(max_size=20),
)
def test_an_unprintable_character_anywhere_inside_is_refused(before: str, bad: str, after: str) -> None:
    text = f"x{before}{bad}{after}x"

    with pytest.raises(ValidationError):
        clean_device_name(text)
