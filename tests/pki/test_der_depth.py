"""The nesting-depth guard (ca.pki.der) run before any recursive ASN.1 decoder sees outside bytes."""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.pki.der import MAX_DEPTH, TooDeep, check_depth, nesting_depth
from tests.conftest import fixture_bytes


def wrapped(depth: int, *, tag: int = 0x30) -> bytes:
    """``depth`` constructed values around a NULL, built as bytes (no recursion)."""
    inner = b"\x05\x00"
    for _ in range(depth):
        size = len(inner)
        length = bytes([size]) if size < 0x80 else b"\x82" + size.to_bytes(2, "big")
        inner = bytes([tag]) + length + inner
    return inner


@pytest.mark.parametrize(
    "name",
    ["openssl-ec-p256.csr.pem", "openssl-rsa4096.csr.pem", "keytool-rsa2048.csr.pem", "selfsigned-cert.pem"],
)
def test_real_structures_are_far_below_the_limit(name: str) -> None:
    data = fixture_bytes(name)
    if b"CERTIFICATE REQUEST" in data:
        der = x509.load_pem_x509_csr(data).public_bytes(serialization.Encoding.DER)
    else:
        der = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    assert 3 <= nesting_depth(der) <= 12


def test_the_depth_counts_constructed_levels() -> None:
    assert nesting_depth(b"\x05\x00") == 1
    assert nesting_depth(wrapped(1)) == 2
    assert nesting_depth(wrapped(MAX_DEPTH - 1)) == MAX_DEPTH


@pytest.mark.parametrize("tag", [0x30, 0x31, 0xA0, 0xA3])
def test_one_level_past_the_limit_is_too_deep(tag: int) -> None:
    check_depth(wrapped(MAX_DEPTH - 1, tag=tag))
    with pytest.raises(TooDeep):
        check_depth(wrapped(MAX_DEPTH, tag=tag))


def test_ten_thousand_levels_are_refused_without_recursion() -> None:
    with pytest.raises(TooDeep):
        check_depth(wrapped(10_000))


def test_high_tag_numbers_and_long_lengths_are_walked() -> None:
    high_tag = b"\x3f\x81\x01" + bytes([len(wrapped(3))]) + wrapped(3)  # [APPLICATION 129] constructed
    assert nesting_depth(high_tag) == 5


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x80\x05\x00\x00\x00", b"\x30\x85\x01", b"\x30\x05\x05\x00", b"\x1f\x81"],
    ids=["empty", "tag-only", "indefinite", "long-length-cut", "content-cut", "high-tag-cut"],
)
def test_unreadable_input_is_left_to_the_real_parser(data: bytes) -> None:
    assert nesting_depth(data) <= 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_depth_or_too_deep(data: bytes) -> None:
    with contextlib.suppress(TooDeep):
        assert nesting_depth(data) >= 0
