"""Certificate serial numbers: ca.pki.serials (RFC 5280 section 4.1.2.2)."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.pki.serials import (
    MAX_SERIAL_OCTETS,
    SerialFormatError,
    format_serial,
    format_serial_colons,
    new_serial,
    parse_serial,
)
from tests.conftest import need_program


def der_integer_content_length(value: int) -> int:
    """Octets of a positive DER INTEGER's content (a leading 0x00 when the top bit is set)."""
    return value.bit_length() // 8 + 1


# --- new_serial ----------------------------------------------------------------------------------------


def test_a_new_serial_is_positive_with_more_than_64_bits_and_at_most_20_octets() -> None:
    for _ in range(200):
        serial = new_serial()

        assert serial > 0
        assert serial.bit_length() > 64
        assert der_integer_content_length(serial) <= MAX_SERIAL_OCTETS


def test_a_thousand_new_serials_are_all_different() -> None:
    serials = {new_serial() for _ in range(1000)}

    assert len(serials) == 1000


def test_new_serials_use_the_full_159_bits() -> None:
    longest = max(new_serial().bit_length() for _ in range(1000))

    assert longest == 159  # the chance that none of 1000 draws has its top bit set is 2^-1000


def test_cryptography_accepts_a_new_serial_in_a_certificate() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serial test")])
    now = dt.datetime.now(dt.UTC)
    serial = new_serial()

    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )

    assert certificate.serial_number == serial


# --- format_serial -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serial", "text"),
    [
        (1, "01"),
        (0x0A, "0A"),
        (0xFF, "FF"),
        (0x100, "0100"),
        (0xABC, "0ABC"),
        (0x4F1A, "4F1A"),
        (0x00DEADBEEF, "DEADBEEF"),
        ((1 << 159) - 1, "7F" + "FF" * 19),
    ],
)
def test_it_formats_a_serial_as_upper_case_hex_of_even_length(serial: int, text: str) -> None:
    assert format_serial(serial=serial) == text


def test_a_formatted_new_serial_is_upper_hex_of_even_length_without_colons() -> None:
    for _ in range(100):
        text = format_serial(serial=new_serial())

        assert len(text) % 2 == 0
        assert text == text.upper()
        assert ":" not in text
        assert len(text) <= 2 * MAX_SERIAL_OCTETS


@pytest.mark.parametrize(("serial", "text"), [(0x0ABC, "0A:BC"), (0x4F1A2B, "4F:1A:2B"), (7, "07")])
def test_it_formats_a_serial_with_colons_like_openssl_text_output(serial: int, text: str) -> None:
    assert format_serial_colons(serial=serial) == text


def test_format_and_parse_round_trip() -> None:
    for _ in range(100):
        serial = new_serial()

        assert parse_serial(text=format_serial(serial=serial)) == serial
        assert parse_serial(text=format_serial_colons(serial=serial)) == serial


@pytest.mark.real_client
def test_it_formats_a_serial_as_openssl_prints_it_for_nginx() -> None:
    """nginx's $ssl_client_serial and `openssl x509 -serial` both print the serial with i2a_ASN1_INTEGER."""
    openssl = need_program("openssl")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serial test")])
    now = dt.datetime.now(dt.UTC)
    for serial in (0x0ABC, 0x4F1A, 0x00FF, new_serial()):
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        printed = subprocess.run(
            [openssl, "x509", "-noout", "-serial"],
            input=certificate.public_bytes(serialization.Encoding.PEM),
            capture_output=True,
            check=True,
        ).stdout.decode()

        assert printed.strip() == f"serial={format_serial(serial=serial)}"


# --- parse_serial --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "serial"),
    [
        pytest.param("4F1A", 0x4F1A, id="upper"),
        pytest.param("4f1a", 0x4F1A, id="lower"),
        pytest.param("4F1a", 0x4F1A, id="mixed-case"),
        pytest.param("4F:1A", 0x4F1A, id="colons"),
        pytest.param("4f:1a", 0x4F1A, id="colons-lower"),
        pytest.param("4F 1A", 0x4F1A, id="spaces"),
        pytest.param("  4F1A\n", 0x4F1A, id="surrounding-whitespace"),
        pytest.param("0x4F1A", 0x4F1A, id="0x-prefix"),
        pytest.param("0X4f1a", 0x4F1A, id="0X-prefix"),
        pytest.param("00:4F:1A", 0x4F1A, id="leading-zero-octet"),
        pytest.param("0004F1A", 0x4F1A, id="leading-zeros-odd-length"),
        pytest.param("ABC", 0xABC, id="odd-length"),
        pytest.param("01", 1, id="one"),
        pytest.param("7F" + "FF" * 19, (1 << 159) - 1, id="twenty-octets"),
    ],
)
def test_it_reads_a_serial_in_any_usual_hex_form(text: str, serial: int) -> None:
    assert parse_serial(text=text) == serial


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        pytest.param("", "hexadecimal", id="empty"),
        pytest.param("   ", "hexadecimal", id="whitespace"),
        pytest.param("0x", "hexadecimal", id="only-0x"),
        pytest.param("::", "hexadecimal", id="only-colons"),
        pytest.param("4F1G", "hexadecimal", id="non-hex-letter"),
        pytest.param("-4F1A", "hexadecimal", id="negative"),
        pytest.param("4F-1A", "hexadecimal", id="dashes"),
        pytest.param("\uff11\uff12", "hexadecimal", id="fullwidth-digits"),
        pytest.param("0", "positive", id="zero"),
        pytest.param("00:00", "positive", id="zero-octets"),
        pytest.param("01" + "00" * 20, "at most 20 octets", id="twenty-one-octets"),
        pytest.param("FF" * 32, "at most 20 octets", id="thirty-two-octets"),
    ],
)
def test_it_refuses_text_that_is_not_a_serial(text: str, keyword: str) -> None:
    with pytest.raises(SerialFormatError) as caught:
        parse_serial(text=text)

    assert keyword in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_its_refusal_quotes_at_most_80_characters_of_the_input() -> None:
    with pytest.raises(SerialFormatError) as caught:
        parse_serial(text="z" * 10_000)

    assert len(str(caught.value)) < 200
