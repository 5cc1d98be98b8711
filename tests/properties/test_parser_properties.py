"""Property-based tests (hypothesis) of every parser that reads hostile input.

For any input each parser either gives its result or refuses with its documented refusal, in bounded time:

- CSR submissions (PEM, DER, bare base64, keytool armour): :func:`ca.pki.csr.parse_csr` -> RequestRefused;
- SPKAC submissions: :func:`ca.pki.spkac.parse_spkac` -> RequestRefused;
- serial numbers as text: :func:`ca.pki.serials.parse_serial` -> SerialFormatError, and the admin search
  (:func:`ca.admin_views.hex_search`) -> None for "not hexadecimal";
- forwarded client-certificate headers: :func:`accounts.certlogin.parse_forwarded_pem` and
  :func:`accounts.certlogin.read_forwarded_certificate` -> None;
- OCSP requests: :func:`ca.pki.ocsp.respond` -> an unsuccessful OCSP answer, never an exception;
- CRLs fetched by crl-sync: :func:`ca.crlsync.parse_crl` / :func:`ca.crlsync.check_crl` -> SyncError.

Inputs: random bytes and text; valid DER mutated as a tree (a node replaced by random well-formed ASN.1 of
other types, its content or tag changed, deleted, duplicated, its length field set to an absurd value such as
0x84FFFFFFFF, or deep nesting) and optionally re-signed, so that the mutation gets past the signature check
into the code behind it; then bit flips, inserted and deleted bytes; truncation at every length; inputs far
above the size caps. Valid inputs still parse. The settings profile (tests/conftest.py) is derandomized.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from asn1crypto import core, keys
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from django.http import HttpRequest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from accounts.certlogin import Config, ForwardedCertificate, parse_forwarded_pem, read_forwarded_certificate
from accounts.proxies import parse as parse_trusted_proxies
from ca import crlsync
from ca.admin_views import hex_search
from ca.pki import ocsp as pki_ocsp
from ca.pki.csr import MAX_SUBMISSION_BYTES, ParsedRequest, check_csr_der, parse_csr
from ca.pki.errors import Refusal, RequestRefused
from ca.pki.serials import (
    MAX_SERIAL_OCTETS,
    SerialFormatError,
    format_serial,
    format_serial_colons,
    parse_serial,
)
from ca.pki.signing import PrivateKeyBackend
from ca.pki.spkac import (
    MAX_SPKAC_BYTES,
    ParsedSpkac,
    PublicKeyAndChallenge,
    SignedPublicKeyAndChallenge,
    check_spkac_der,
    parse_spkac,
)
from ca.pki.submission import _OneAsymmetricKey
from tests.conftest import FIXTURES, fixture_bytes
from tests.spkac_tools import build_spkac, load_key

#: Wall-clock bound for one parser call; the slowest valid input (an RSA 4096 CSR) takes a few milliseconds.
PER_CALL_SECONDS = 1.0
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
CHALLENGE = "4f1c2a9e0b7d6c5a4f1c2a9e0b7d6c5a4f1c2a9e"

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def bounded(call: Callable[[], T]) -> T:
    """Run ``call`` and fail if it took longer than :data:`PER_CALL_SECONDS`."""
    started = time.perf_counter()
    try:
        return call()
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < PER_CALL_SECONDS, f"took {elapsed:.2f} s"


def outcome(call: Callable[[], T], refusal: type[E]) -> T | E:
    """The result of ``call``, or the documented refusal it raised (any other exception fails the test)."""
    try:
        return bounded(call)
    except refusal as refused:
        return refused


# --- a small DER tree codec for structure-aware mutation (X.690, definite lengths, one-byte tags) ----


@dataclass
class Node:
    tag: int
    content: bytes = b""
    children: list[Node] | None = None  # constructed
    length_override: bytes | None = None  # an absurd or non-minimal length field, written as it is

    def encode(self) -> bytes:
        body = self.content if self.children is None else b"".join(child.encode() for child in self.children)
        return bytes([self.tag]) + (self.length_override or der_length(len(body))) + body


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def parse_tree(der: bytes) -> Node:
    """The tree of a valid DER object (the seeds below); BIT and OCTET STRINGs stay primitive."""
    node, rest = _parse_node(der)
    assert rest == b""
    return node


def _parse_node(data: bytes) -> tuple[Node, bytes]:
    tag, first = data[0], data[1]
    if first < 0x80:
        length, offset = first, 2
    else:
        count = first & 0x7F
        length, offset = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    body, rest = data[offset : offset + length], data[offset + length :]
    if not tag & 0x20:
        return Node(tag, content=body), rest
    children: list[Node] = []
    while body:
        child, body = _parse_node(body)
        children.append(child)
    return Node(tag, children=children), rest


def all_nodes(root: Node) -> list[tuple[Node | None, Node]]:
    """(parent, node) for every node, root first."""
    found: list[tuple[Node | None, Node]] = [(None, root)]
    index = 0
    while index < len(found):
        node = found[index][1]
        found.extend((node, child) for child in node.children or [])
        index += 1
    return found


def copy_tree(node: Node) -> Node:
    children = None if node.children is None else [copy_tree(child) for child in node.children]
    return Node(node.tag, node.content, children, node.length_override)


#: Universal tags a certificate-like structure uses, so replacements are plausible but of the wrong type.
TAGS = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x0C, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1E, 0x30, 0x31]
CONTEXT_TAGS = [0x80, 0x81, 0x82, 0x86, 0xA0, 0xA1, 0xA2, 0xA3]
ABSURD_LENGTHS = [
    b"\x84\xff\xff\xff\xff",
    b"\x88\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x80",  # indefinite (BER only)
    b"\xff",
    b"\x81\x05",  # non-minimal
    b"\x82\x00\x05",
    b"\x84\x7f\xff\xff\xff",
]


def asn1_values(max_leaves: int = 6) -> st.SearchStrategy[Node]:
    """Random well-formed ASN.1 values of any universal or context type, nested."""
    constructed_tags = [t for t in TAGS + CONTEXT_TAGS if t & 0x20]
    primitive = st.builds(
        lambda tag, content: Node(tag, content=content),
        st.sampled_from([t for t in TAGS + CONTEXT_TAGS if not t & 0x20]),
        st.one_of(
            st.binary(max_size=40), st.sampled_from([b"", b"\x00", b"\xff" * 9, b"\x80", b"\x2a\x86\x48"])
        ),
    ) | st.builds(lambda tag: Node(tag, children=[]), st.sampled_from(constructed_tags))
    return st.recursive(
        primitive,
        lambda inner: st.builds(
            lambda tag, children: Node(tag, children=children),
            st.sampled_from(constructed_tags),
            st.lists(inner, min_size=1, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def deep_nesting(depth: int, *, indefinite: bool) -> Node:
    """SEQUENCEs nested ``depth`` deep (built as bytes: no recursion here), around a NULL."""
    if indefinite:
        return Node(0x30, content=b"\x30\x80" * depth, length_override=b"\x80")
    inner = b"\x05\x00"
    for _ in range(depth - 1):
        inner = b"\x30" + der_length(len(inner)) + inner
    return Node(0x30, content=inner)


@st.composite
def mutate_tree(draw: st.DrawFn, seed: bytes) -> Node:
    """The seed's tree with one to three structural mutations."""
    root = copy_tree(parse_tree(seed))
    for _ in range(draw(st.integers(1, 3))):
        nodes = all_nodes(root)
        parent, node = nodes[draw(st.integers(0, len(nodes) - 1))]
        operation = draw(
            st.sampled_from(["replace", "content", "tag", "delete", "duplicate", "length", "nest"])
        )
        if operation == "replace":
            replacement = draw(asn1_values())
            node.tag, node.content, node.children = replacement.tag, replacement.content, replacement.children
        elif operation == "content":
            node.children, node.content = None, draw(st.binary(max_size=64))
        elif operation == "tag":
            node.tag = draw(st.sampled_from(TAGS + CONTEXT_TAGS)) | (0x20 if node.children is not None else 0)
        elif operation == "delete" and parent is not None and parent.children:
            parent.children.remove(node)
        elif operation == "duplicate" and parent is not None and parent.children is not None:
            parent.children.insert(parent.children.index(node), copy_tree(node))
        elif operation == "length":
            node.length_override = draw(st.sampled_from(ABSURD_LENGTHS))
        elif operation == "nest":
            nested = deep_nesting(draw(st.integers(50, 10_000)), indefinite=draw(st.booleans()))
            node.tag, node.content, node.children = nested.tag, nested.content, nested.children
            node.length_override = nested.length_override
    return root


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Zero to three bit flips, inserted or deleted byte runs, or a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        position = draw(st.integers(0, len(out) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if operation == "flip":
            out[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "insert":
            out[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del out[position : position + draw(st.integers(1, 8))]
        else:
            del out[position:]
    return bytes(out)


def resigned(root: Node, sign: Callable[[bytes], bytes]) -> bytes:
    """Re-sign a SIGNED{...} structure (tbs, algorithm, BIT STRING) after its tbs part was mutated."""
    assert root.children is not None
    tbs = root.children[0].encode()
    signature = Node(0x03, content=b"\x00" + sign(tbs))
    return Node(0x30, children=[root.children[0], root.children[1], signature]).encode()


@st.composite
def mutated_signed(draw: st.DrawFn, seed: bytes, sign: Callable[[bytes], bytes] | None) -> bytes:
    """Mutate the seed; for a signed seed (with ``sign``) mostly inside the signed part, then re-sign it
    so that the signature verifies and the mutation reaches the checks after it."""
    if sign is not None and draw(st.booleans()):
        root = copy_tree(parse_tree(seed))
        assert root.children is not None
        tbs = draw(mutate_tree(root.children[0].encode()))
        root.children[0] = tbs
        der = resigned(root, sign)
    else:
        der = draw(mutate_tree(seed)).encode()
    return draw(byte_mutations(der))


# --- seeds: real objects made once ------------------------------------------------------------------

EC_KEY = load_key(FIXTURES / "openssl-ec-p256.key.pem")
assert isinstance(EC_KEY, ec.EllipticCurvePrivateKey)


def ecdsa_sign(data: bytes) -> bytes:
    assert isinstance(EC_KEY, ec.EllipticCurvePrivateKey)
    return EC_KEY.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def pem_der(name: str) -> bytes:
    return x509.load_pem_x509_csr(fixture_bytes(name)).public_bytes(serialization.Encoding.DER)


CSR_EC = pem_der("openssl-ec-p256.csr.pem")
CSR_SEEDS = [CSR_EC, pem_der("openssl-rsa2048-pss.csr.pem"), pem_der("keytool-rsa2048.csr.pem")]
SPKAC_EC = base64.b64decode(build_spkac(EC_KEY, CHALLENGE, algorithm="sha256_ecdsa").removeprefix("SPKAC="))
SPKAC_RSA = base64.b64decode(
    build_spkac(load_key(FIXTURES / "openssl-rsa2048.key.pem"), CHALLENGE).removeprefix("SPKAC=")
)


@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    leaf: x509.Certificate
    crl_der: bytes
    ocsp_request_der: bytes
    states: dict[int, pki_ocsp.CertificateState] = field(default_factory=dict)


def make_issuer() -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Property Test CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(name)
        .public_key(EC_KEY.public_key())
        .serial_number(0x4F1A2B3C4D5E6F708192A3B4C5D6E7F801020304)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(7), critical=False)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(leaf.serial_number)
            .revocation_date(NOW - dt.timedelta(hours=2))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        .sign(key, hashes.SHA256())
    )
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, certificate, hashes.SHA256())
        .add_extension(x509.OCSPNonce(b"\x01" * 16), critical=False)
        .build()
    )
    return Issuer(
        key=key,
        certificate=certificate,
        leaf=leaf,
        crl_der=crl.public_bytes(serialization.Encoding.DER),
        ocsp_request_der=request.public_bytes(serialization.Encoding.DER),
        states={leaf.serial_number: pki_ocsp.CertificateState()},
    )


ISSUER = make_issuer()


def issuer_sign(data: bytes) -> bytes:
    return ISSUER.key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


# --- encodings --------------------------------------------------------------------------------------


def pem(der: bytes, label: str, *, newline: bytes = b"\n") -> bytes:
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return newline.join(
        [b"-----BEGIN " + label.encode() + b"-----", *lines, b"-----END " + label.encode() + b"-----", b""]
    )


CSR_FORMS: dict[str, Callable[[bytes], bytes | str]] = {
    "der": lambda der: der,
    "pem": lambda der: pem(der, "CERTIFICATE REQUEST"),
    "keytool": lambda der: pem(der, "NEW CERTIFICATE REQUEST", newline=b"\r\n"),
    "base64": lambda der: base64.b64encode(der),
    "pem-text": lambda der: pem(der, "CERTIFICATE REQUEST").decode("ascii"),
}
SPKAC_FORMS: dict[str, Callable[[bytes], bytes | str]] = {
    "der": lambda der: der,
    "openssl": lambda der: "SPKAC=" + base64.b64encode(der).decode("ascii"),
    "base64": lambda der: base64.b64encode(der),
    "wrapped": lambda der: b"\r\n".join(base64.encodebytes(der).split(b"\n")),
}


# --- CSR --------------------------------------------------------------------------------------------


def assert_plain_refusal(refused: RequestRefused) -> None:
    assert refused.code in Refusal.__members__.values()
    assert refused.message
    assert len(refused.message) < 1000


def assert_csr_parser_holds(data: bytes | str) -> None:
    """Accepted (and then accepted again by the CA's re-check) or refused with RequestRefused."""
    parsed = outcome(lambda: parse_csr(data=data), RequestRefused)
    if isinstance(parsed, RequestRefused):
        assert_plain_refusal(parsed)
        return
    assert isinstance(parsed, ParsedRequest)
    assert bounded(lambda: check_csr_der(der=parsed.der)).sha256 == parsed.sha256


#: Algorithms whose parameters asn1crypto decodes as ANY (so recursively, when asked for .native).
OPEN_PARAMETER_OIDS = {"ed25519": b"\x2b\x65\x70", "rsassa-pss": b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a"}


def private_key_shape(depth: int, *, oid: bytes) -> bytes:
    """A OneAsymmetricKey (RFC 5958) whose algorithm parameters nest ``depth`` SEQUENCEs: the 3.6 KB shape
    that once drove the private-key check's recursive decoder out of stack."""
    algorithm = Node(0x30, children=[Node(0x06, content=oid)])
    params = deep_nesting(depth, indefinite=False)
    assert algorithm.children is not None
    algorithm.children.append(params)
    return Node(
        0x30, children=[Node(0x02, content=b"\x00"), algorithm, Node(0x04, content=b"k" * 32)]
    ).encode()


@pytest.mark.parametrize("depth", [33, 950, 3_000, 10_000])
@pytest.mark.parametrize("form", ["der", "pem", "base64"])
@pytest.mark.parametrize("algorithm", list(OPEN_PARAMETER_OIDS))
def test_a_deeply_nested_private_key_shape_is_refused_in_plain_words(
    depth: int, form: str, algorithm: str
) -> None:
    der = private_key_shape(depth, oid=OPEN_PARAMETER_OIDS[algorithm])
    data = {"der": der, "pem": pem(der, "CERTIFICATE REQUEST"), "base64": base64.b64encode(der)}[form]
    for parse in (lambda: parse_csr(data=data), lambda: parse_spkac(data=data)):
        refused = outcome(parse, RequestRefused)
        assert isinstance(refused, RequestRefused)
        assert_plain_refusal(refused)


@given(st.integers(33, 10_000), st.sampled_from([0x30, 0x31, 0xA0, 0xA3]))
@settings(max_examples=40, deadline=None)
def test_nesting_to_ten_thousand_is_refused_by_every_der_parser(depth: int, tag: int) -> None:
    inner = b"\x05\x00"
    for _ in range(depth):
        inner = bytes([tag]) + der_length(len(inner)) + inner
    for data in (inner, b"\x30" + der_length(len(inner) + 3) + b"\x02\x01\x00" + inner):
        assert isinstance(outcome(lambda data=data: parse_csr(data=data), RequestRefused), RequestRefused)  # type: ignore[misc]
        assert isinstance(outcome(lambda data=data: parse_spkac(data=data), RequestRefused), RequestRefused)  # type: ignore[misc]
        assert assert_ocsp_answers(data).status == "malformed"
        assert_crl_sync_holds(data)


@pytest.mark.parametrize("name", ["openssl-ec-p256", "openssl-rsa4096", "keytool-ec-p256"])
@pytest.mark.parametrize("form", list(CSR_FORMS))
def test_valid_csrs_parse_in_every_form(name: str, form: str) -> None:
    path = f"{name}.csr.pem"
    parsed = bounded(lambda: parse_csr(data=CSR_FORMS[form](pem_der(path))))

    assert parsed.der == pem_der(path)


@given(st.one_of(st.binary(max_size=2048), st.text(max_size=2048)))
@example(b"\x30\x80" * 8000)
@example(b"-----BEGIN A-----" * 900)
@example(b"-----BEGIN CERTIFICATE REQUEST-----\n" * 400)
def test_random_input_never_breaks_the_csr_parser(data: bytes | str) -> None:
    assert_csr_parser_holds(data)


@given(
    st.sampled_from(CSR_SEEDS).flatmap(
        lambda seed: mutated_signed(seed, ecdsa_sign if seed == CSR_EC else None)
    ),
    st.sampled_from(list(CSR_FORMS)),
)
def test_mutated_csrs_never_break_the_csr_parser(der: bytes, form: str) -> None:
    assert_csr_parser_holds(CSR_FORMS[form](der))


@pytest.mark.parametrize("form", ["der", "pem"])
def test_a_csr_cut_at_every_length_is_refused(form: str) -> None:
    for length in range(len(CSR_EC)):
        data = CSR_FORMS[form](CSR_EC[:length])
        with pytest.raises(RequestRefused):
            bounded(lambda data=data: parse_csr(data=data))  # type: ignore[misc]


@pytest.mark.parametrize("size", [MAX_SUBMISSION_BYTES + 1, 1 << 20])
def test_a_csr_submission_above_the_cap_is_refused_at_once(size: int) -> None:
    data = pem(CSR_EC, "CERTIFICATE REQUEST") + b" " * size

    with pytest.raises(RequestRefused) as refused:
        bounded(lambda: parse_csr(data=data))
    assert refused.value.code == Refusal.TOO_LARGE


# --- SPKAC ------------------------------------------------------------------------------------------


def assert_spkac_parser_holds(data: bytes | str, *, allow_md5: bool = False) -> None:
    parsed = outcome(lambda: parse_spkac(data=data, allow_md5=allow_md5), RequestRefused)
    if isinstance(parsed, RequestRefused):
        assert_plain_refusal(parsed)
        return
    assert isinstance(parsed, ParsedSpkac)
    assert bounded(lambda: check_spkac_der(der=parsed.der, allow_md5=allow_md5)).sha256 == parsed.sha256


@pytest.mark.parametrize("seed", [SPKAC_EC, SPKAC_RSA], ids=["ec", "rsa"])
@pytest.mark.parametrize("form", list(SPKAC_FORMS))
def test_valid_spkacs_parse_in_every_form(seed: bytes, form: str) -> None:
    parsed = bounded(lambda: parse_spkac(data=SPKAC_FORMS[form](seed)))

    assert (parsed.der, parsed.challenge) == (seed, CHALLENGE)


@given(st.one_of(st.binary(max_size=2048), st.text(max_size=2048)), st.booleans())
@example(b"\x30\x80" * 8000, False)
@example("SPKAC=" + "A" * 4000, False)
def test_random_input_never_breaks_the_spkac_parser(data: bytes | str, allow_md5: bool) -> None:
    assert_spkac_parser_holds(data, allow_md5=allow_md5)


@given(
    st.sampled_from([SPKAC_EC, SPKAC_RSA]).flatmap(
        lambda seed: mutated_signed(seed, ecdsa_sign if seed == SPKAC_EC else None)
    ),
    st.sampled_from(list(SPKAC_FORMS)),
    st.booleans(),
)
def test_mutated_spkacs_never_break_the_spkac_parser(der: bytes, form: str, allow_md5: bool) -> None:
    assert_spkac_parser_holds(SPKAC_FORMS[form](der), allow_md5=allow_md5)


def test_an_spkac_cut_at_every_length_is_refused() -> None:
    for length in range(len(SPKAC_EC)):
        for data in (SPKAC_EC[:length], SPKAC_FORMS["openssl"](SPKAC_EC[:length])):
            with pytest.raises(RequestRefused):
                bounded(lambda data=data: parse_spkac(data=data))  # type: ignore[misc]


def test_an_spkac_above_the_cap_is_refused_at_once() -> None:
    with pytest.raises(RequestRefused) as refused:
        bounded(lambda: parse_spkac(data="SPKAC=" + "A" * (MAX_SPKAC_BYTES * 64)))
    assert refused.value.code == Refusal.TOO_LARGE


# --- serial numbers ---------------------------------------------------------------------------------

SERIALS = st.integers(1, (1 << (8 * MAX_SERIAL_OCTETS)) - 1)


@given(st.text(max_size=200))
@example("0x")
@example("٣٤")  # Arabic-Indic digits: int() would read them, a serial is ASCII hex
@example("1_0")
@example("f" * 100_000)
def test_any_text_is_a_serial_or_refused_with_serial_format_error(text: str) -> None:
    value = outcome(lambda: parse_serial(text=text), SerialFormatError)
    if isinstance(value, SerialFormatError):
        assert str(value)
        return
    assert 0 < value < 1 << (8 * MAX_SERIAL_OCTETS)


@given(SERIALS, st.sampled_from(["plain", "colons", "lower", "0x", "spaced"]))
def test_every_written_form_of_a_serial_reads_back(serial: int, form: str) -> None:
    text = {
        "plain": format_serial(serial=serial),
        "colons": format_serial_colons(serial=serial),
        "lower": format_serial_colons(serial=serial).lower(),
        "0x": f"0x{serial:x}",
        "spaced": " " + format_serial_colons(serial=serial).replace(":", " ") + "\n",
    }[form]

    assert parse_serial(text=text) == serial


@given(st.text(max_size=200))
@example("00" * 40_000)
def test_the_admin_search_reads_any_text_as_hex_or_nothing(term: str) -> None:
    bounded(lambda: hex_search(term, exact=("fingerprint_sha256",), serial="serial"))


# --- forwarded client-certificate headers ----------------------------------------------------------

LEAF_DER = ISSUER.leaf.public_bytes(serialization.Encoding.DER)
LEAF_PEM = pem(LEAF_DER, "CERTIFICATE").decode("ascii")
HEADER_FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda text: text,
    "nginx": lambda text: urllib.parse.quote(text, safe=""),  # $ssl_client_escaped_cert
    "apache": lambda text: text.replace("\n", " "),  # SSL_CLIENT_CERT through RequestHeader
}
CONFIG = Config(
    enabled=True,
    proxies=parse_trusted_proxies(["127.0.0.1"]),
    verify_key="HTTP_X_SSL_CLIENT_VERIFY",
    cert_key="HTTP_X_SSL_CLIENT_CERT",
    serial_key="HTTP_X_SSL_CLIENT_SERIAL",
)


def header_request(meta: dict[str, str]) -> HttpRequest:
    request = HttpRequest()
    request.META = {"REMOTE_ADDR": "127.0.0.1", **meta}
    return request


@pytest.mark.parametrize("form", list(HEADER_FORMS))
def test_a_forwarded_certificate_reads_back_in_every_form(form: str) -> None:
    header = HEADER_FORMS[form](LEAF_PEM)
    request = header_request(
        {
            "HTTP_X_SSL_CLIENT_VERIFY": "SUCCESS",
            "HTTP_X_SSL_CLIENT_CERT": header,
            "HTTP_X_SSL_CLIENT_SERIAL": "4F1A",
        }
    )

    assert parse_forwarded_pem(header) == LEAF_DER
    forwarded = read_forwarded_certificate(request, CONFIG)
    assert isinstance(forwarded, ForwardedCertificate)
    assert (forwarded.der, forwarded.serial) == (LEAF_DER, 0x4F1A)


@st.composite
def forwarded_headers(draw: st.DrawFn) -> str:
    """Random text, or the leaf certificate's PEM mutated as text or as DER, in any front server's form."""
    kind = draw(st.sampled_from(["text", "pem-text", "der"]))
    if kind == "text":
        return draw(st.text(max_size=4000))
    if kind == "pem-text":
        text = LEAF_PEM
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(text)))
            text = text[:position] + draw(st.text(max_size=6)) + text[position + draw(st.integers(0, 6)) :]
    else:
        text = pem(draw(mutated_signed(LEAF_DER, None)), "CERTIFICATE").decode("ascii")
    return HEADER_FORMS[draw(st.sampled_from(list(HEADER_FORMS)))](text)


@given(
    forwarded_headers(),
    st.sampled_from(["SUCCESS", "NONE", "FAILED:x", "SUCCESS,SUCCESS"]),
    st.text(max_size=60),
)
@example("%" * 32_000, "SUCCESS", "")
@example("%FF%FE" + LEAF_PEM, "SUCCESS", "")
@example(LEAF_PEM + LEAF_PEM, "SUCCESS", "")
@example("-----BEGIN CERTIFICATE-----" + " " * 30_000, "SUCCESS", "")
@example(LEAF_PEM, "SUCCESS", "٣")
def test_any_forwarded_header_gives_a_certificate_or_none(header: str, verify: str, serial: str) -> None:
    der = bounded(lambda: parse_forwarded_pem(header))
    request = header_request(
        {
            "HTTP_X_SSL_CLIENT_VERIFY": verify,
            "HTTP_X_SSL_CLIENT_CERT": header,
            "HTTP_X_SSL_CLIENT_SERIAL": serial,
        }
    )
    forwarded = bounded(lambda: read_forwarded_certificate(request, CONFIG))

    assert der is None or (isinstance(der, bytes) and der)
    assert forwarded is None or (verify == "SUCCESS" and forwarded.der == der)


# --- OCSP requests ----------------------------------------------------------------------------------

OCSP_STATUSES = {"good", "revoked", "unknown", "malformed", "unauthorized"}


def assert_ocsp_answers(request_der: bytes) -> pki_ocsp.OcspAnswer:
    answer = bounded(
        lambda: pki_ocsp.respond(
            request_der=request_der,
            issuer=ISSUER.certificate,
            backend=PrivateKeyBackend(key=ISSUER.key),
            lookup=ISSUER.states.get,
            now=NOW,
            validity=dt.timedelta(hours=1),
        )
    )
    assert answer.status in OCSP_STATUSES
    ocsp.load_der_ocsp_response(answer.der)
    return answer


def test_a_valid_ocsp_request_is_answered_good_with_its_nonce() -> None:
    answer = assert_ocsp_answers(ISSUER.ocsp_request_der)

    assert (answer.status, answer.has_nonce) == ("good", True)


@given(st.binary(max_size=1024))
@example(b"\x30\x80" * 8000)
def test_random_bytes_get_an_ocsp_answer(data: bytes) -> None:
    assert_ocsp_answers(data)


@given(mutated_signed(ISSUER.ocsp_request_der, None))
def test_mutated_ocsp_requests_get_an_ocsp_answer(data: bytes) -> None:
    assert_ocsp_answers(data)


def test_an_ocsp_request_cut_at_every_length_is_malformed() -> None:
    for length in range(len(ISSUER.ocsp_request_der)):
        assert assert_ocsp_answers(ISSUER.ocsp_request_der[:length]).status == "malformed"


# --- CRLs read by crl-sync ---------------------------------------------------------------------------

CRL_URL = "http://portal.example/crl/test.crl"


def assert_crl_sync_holds(data: bytes) -> None:
    """parse_crl + check_crl give a CRL number or SyncError, never another exception."""
    crl = outcome(lambda: crlsync.parse_crl(data, url=CRL_URL), crlsync.SyncError)
    if isinstance(crl, crlsync.SyncError):
        assert str(crl).startswith(CRL_URL)
        return
    checked = crl
    number = outcome(
        lambda: crlsync.check_crl(
            checked, url=CRL_URL, trusted=[ISSUER.certificate], installed_number=None, now=NOW
        ),
        crlsync.SyncError,
    )
    if isinstance(number, crlsync.SyncError):
        assert str(number).startswith(CRL_URL)
        return
    assert number >= 0


@pytest.mark.parametrize("form", ["der", "pem"])
def test_a_valid_crl_passes_crl_sync_checks(form: str) -> None:
    data = ISSUER.crl_der if form == "der" else pem(ISSUER.crl_der, "X509 CRL")
    crl = crlsync.parse_crl(data, url=CRL_URL)

    assert (
        crlsync.check_crl(crl, url=CRL_URL, trusted=[ISSUER.certificate], installed_number=None, now=NOW) == 7
    )


@given(
    st.one_of(
        st.binary(max_size=2048), st.binary(max_size=512).map(lambda b: b"-----BEGIN X509 CRL-----\n" + b)
    )
)
@example(b"\x30\x80" * 8000)
def test_random_bytes_never_break_crl_sync(data: bytes) -> None:
    assert_crl_sync_holds(data)


@given(mutated_signed(ISSUER.crl_der, issuer_sign), st.booleans())
def test_mutated_and_re_signed_crls_never_break_crl_sync(der: bytes, as_pem: bool) -> None:
    assert_crl_sync_holds(pem(der, "X509 CRL") if as_pem else der)


def test_a_crl_cut_at_every_length_is_refused_by_crl_sync() -> None:
    for length in range(len(ISSUER.crl_der)):
        with pytest.raises(crlsync.SyncError):
            crlsync.parse_crl(ISSUER.crl_der[:length], url=CRL_URL)


# --- regressions: what these properties found -------------------------------------------------------

OCSP_NONCE_OID = bytes.fromhex("2b0601050507300102")  # 1.3.6.1.5.5.7.48.1.2
CRL_NUMBER_OID = bytes.fromhex("551d14")  # 2.5.29.20


def with_extension_changed(der: bytes, oid: bytes, change: str) -> Node:
    """The tree of ``der`` with its extension ``oid`` repeated, or its value made unreadable."""
    root = parse_tree(der)
    for parent, node in all_nodes(root):
        if node.children and node.children[0].tag == 0x06 and node.children[0].content == oid:
            assert parent is not None
            assert parent.children is not None
            if change == "repeated":
                parent.children.append(copy_tree(node))
            else:
                node.children[-1].content = b"\x04\x01\x00"  # an OCTET STRING where an INTEGER belongs
            return root
    raise AssertionError("extension not found")


def test_an_ocsp_request_with_a_repeated_nonce_is_malformed_not_an_error() -> None:
    request = with_extension_changed(ISSUER.ocsp_request_der, OCSP_NONCE_OID, "repeated").encode()

    assert assert_ocsp_answers(request).status == "malformed"


@pytest.mark.parametrize("change", ["repeated", "unreadable"])
def test_a_signed_crl_with_a_repeated_or_unreadable_crl_number_is_refused_in_one_line(change: str) -> None:
    crl_der = resigned(with_extension_changed(ISSUER.crl_der, CRL_NUMBER_OID, change), issuer_sign)
    crl = crlsync.parse_crl(crl_der, url=CRL_URL)

    with pytest.raises(crlsync.SyncError, match="extensions are damaged or repeated"):
        crlsync.check_crl(crl, url=CRL_URL, trusted=[ISSUER.certificate], installed_number=None, now=NOW)


@pytest.mark.parametrize(
    "data",
    [b"-----BEGIN A-----" * 960, b"-----BEGIN CERTIFICATE REQUEST-----\n" * 450],
    ids=["short-begin-lines", "request-begin-lines"],
)
def test_a_flood_of_pem_begin_lines_is_refused_in_linear_time(data: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(RequestRefused) as refused:
        parse_csr(data=data)

    assert time.perf_counter() - started < 0.1  # 0.3 s before the PEM body was made possessive
    assert refused.value.code == Refusal.TRUNCATED


@pytest.mark.parametrize(
    "data",
    ["A" * 400, "SPKAC=AAAA", base64.b64encode(b"\x02\x01\x00" + SPKAC_EC), base64.b64encode(b"\x04\x00")],
    ids=["zero-bytes", "prefixed-zero-bytes", "integer-then-spkac", "empty-octet-string"],
)
def test_input_that_starts_with_no_sequence_is_not_an_spkac_rather_than_extra_data(data: bytes | str) -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_spkac(data=data)

    assert refused.value.code == Refusal.MALFORMED
    assert "not a valid SPKAC" in refused.value.message


def huge_number(bits: int, seed: int) -> int:
    return random.Random(seed).getrandbits(bits) | 1 << (bits - 1) | 1


def crafted_dsa_private_key(bits: int) -> bytes:
    """A PKCS#8 DSA private key of ``bits``-bit numbers: loading it computes g^x mod p (100 s at 30000)."""
    params = keys.DSAParams(
        {"p": huge_number(bits, 1), "q": huge_number(bits // 2, 2), "g": huge_number(bits - 2, 3)}
    )
    der: bytes = keys.PrivateKeyInfo(
        {
            "version": 0,
            "private_key_algorithm": {"algorithm": "dsa", "parameters": params},
            "private_key": core.Integer(huge_number(bits - 8, 4)),
        }
    ).dump()
    return der


def crafted_dh_key(bits: int) -> keys.PublicKeyInfo:
    """A Diffie-Hellman public key of a ``bits``-bit group: loading it tests the group (70 s at 30000)."""
    group = keys.DomainParameters({"p": huge_number(bits, 5), "g": 2, "q": huge_number(bits - 1, 6)})
    return keys.PublicKeyInfo(
        {
            "algorithm": {"algorithm": "dh", "parameters": group},
            "public_key": core.Integer(huge_number(bits - 1, 7)),
        }
    )


def csr_with_key(spki: keys.PublicKeyInfo, signature_algorithm: str = "sha256_ecdsa") -> bytes:
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": asn1_x509.Name.build({"common_name": "x"}),
            "subject_pk_info": spki,
            "attributes": [],
        }
    )
    der: bytes = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": signature_algorithm},
            "signature": b"\x00" * 72,
        }
    ).dump()
    return der


def spkac_with_key(spki: keys.PublicKeyInfo, signature_algorithm: str = "sha256_ecdsa") -> bytes:
    der: bytes = SignedPublicKeyAndChallenge(
        {
            "public_key_and_challenge": PublicKeyAndChallenge({"spki": spki, "challenge": CHALLENGE}),
            "signature_algorithm": {"algorithm": signature_algorithm},
            "signature": b"\x00" * 72,
        }
    ).dump()
    return der


@pytest.mark.parametrize(
    ("parse", "data", "code"),
    [
        (parse_csr, crafted_dsa_private_key(30000), Refusal.PRIVATE_KEY),
        (parse_spkac, crafted_dsa_private_key(30000), Refusal.PRIVATE_KEY),
        (parse_csr, csr_with_key(crafted_dh_key(30000)), Refusal.KEY_TYPE),
        (parse_spkac, spkac_with_key(crafted_dh_key(30000)), Refusal.KEY_TYPE),
    ],
    ids=["dsa-private-key-as-csr", "dsa-private-key-as-spkac", "dh-key-in-csr", "dh-key-in-spkac"],
)
def test_keys_that_cost_minutes_to_load_are_refused_without_loading_them(
    parse: Callable[..., object], data: bytes, code: Refusal
) -> None:
    assert len(data) < MAX_SUBMISSION_BYTES
    started = time.perf_counter()
    with pytest.raises(RequestRefused) as refused:
        parse(data=data)

    assert time.perf_counter() - started < 0.1  # 70-100 s each when `cryptography` loaded the key
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("parameters", "code"),
    [
        (
            [],
            Refusal.BAD_SIGNATURE,
        ),  # read as RFC 4055's defaults (SHA-1), which the signature was not made with
        ([Node(0x05)], Refusal.MALFORMED),
        ([Node(0x30, children=[Node(0x02, content=b"\x05")])], Refusal.MALFORMED),
    ],
    ids=["none", "null", "wrong-type"],
)
def test_a_csr_signed_with_rsassa_pss_without_usable_parameters_is_refused(
    parameters: list[Node], code: Refusal
) -> None:
    root = parse_tree(pem_der("openssl-rsa2048-pss.csr.pem"))
    assert root.children is not None
    pss = Node(0x06, content=bytes.fromhex("2a864886f70d01010a"))  # 1.2.840.113549.1.1.10
    root.children[1] = Node(0x30, children=[pss, *parameters])

    with pytest.raises(RequestRefused) as refused:
        parse_csr(data=root.encode())

    assert refused.value.code == code


def test_an_ocsp_request_for_a_negative_serial_is_malformed_not_an_error() -> None:
    root = parse_tree(ISSUER.ocsp_request_der)
    serial = next(node for _, node in all_nodes(root) if node.tag == 0x02 and len(node.content) == 20)
    serial.content = b"\xff\x01"  # -255

    assert assert_ocsp_answers(root.encode()).status == "malformed"


def test_a_signed_crl_with_a_damaged_issuer_name_is_refused_in_one_line() -> None:
    root = parse_tree(ISSUER.crl_der)
    common_name = next(
        node for _, node in all_nodes(root) if node.tag == 0x0C and node.content == b"Property Test CA"
    )
    common_name.tag, common_name.content, common_name.children = 0x30, b"", []  # a SEQUENCE for a string
    crl = crlsync.parse_crl(resigned(root, issuer_sign), url=CRL_URL)

    with pytest.raises(crlsync.SyncError, match="issuer name is damaged"):
        crlsync.check_crl(crl, url=CRL_URL, trusted=[ISSUER.certificate], installed_number=None, now=NOW)


# --- keys of any algorithm with numbers of any size: cheap to refuse, never loaded when costly ------


class AnyAlgorithm(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no type hints
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class AnyPublicKeyInfo(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no type hints
    """A SubjectPublicKeyInfo of any algorithm, its key bits as they are."""

    _fields = [("algorithm", AnyAlgorithm), ("public_key", core.OctetBitString)]


@st.composite
def crafted_public_keys(draw: st.DrawFn) -> keys.PublicKeyInfo:
    """A SubjectPublicKeyInfo of a known or unknown algorithm whose numbers have up to 30000 bits."""
    bits = draw(st.sampled_from([64, 1024, 3072, 8192, 16384, 30000]))

    def number() -> int:
        return draw(st.integers(1 << (bits - 1), (1 << bits) - 1))

    algorithm = draw(st.sampled_from(["rsa", "dsa", "dh", "ec-named", "ec-specified", "other"]))
    if algorithm == "rsa":
        exponent = draw(st.sampled_from([3, 65537, (1 << 63) + 1, number()]))
        rsa_key = keys.RSAPublicKey({"modulus": number(), "public_exponent": exponent})
        return keys.PublicKeyInfo({"algorithm": {"algorithm": "rsa"}, "public_key": rsa_key})
    if algorithm in ("dsa", "dh"):
        params = {"p": number(), "q": number() >> (bits // 2), "g": number()}
        parameters = keys.DSAParams(params) if algorithm == "dsa" else keys.DomainParameters(params)
        return keys.PublicKeyInfo(
            {
                "algorithm": {"algorithm": algorithm, "parameters": parameters},
                "public_key": core.Integer(number()),
            }
        )
    point = b"\x04" + draw(st.binary(min_size=1, max_size=bits // 8 * 2))
    if algorithm == "ec-named":
        curve = keys.ECDomainParameters(
            name="named", value=draw(st.sampled_from(["secp256r1", "secp384r1", "secp521r1", "1.2.3.4"]))
        )
    elif algorithm == "ec-specified":
        size = bits // 8
        curve = keys.ECDomainParameters(
            name="specified",
            value=keys.SpecifiedECDomain(
                {
                    "version": "ecdpVer1",
                    "field_id": {"field_type": "prime_field", "parameters": core.Integer(number())},
                    "curve": {"a": number().to_bytes(size, "big"), "b": number().to_bytes(size, "big")},
                    "base": point,
                    "order": number(),
                    "cofactor": draw(st.integers(1, 1 << 64)),
                }
            ),
        )
    else:
        oid = draw(st.sampled_from(["1.3.101.110", "1.3.101.112", "1.2.840.113549.1.1.10", "1.2.3.4"]))
        any_key = AnyPublicKeyInfo({"algorithm": {"algorithm": oid}, "public_key": point})
        return keys.PublicKeyInfo.load(any_key.dump())
    return keys.PublicKeyInfo({"algorithm": {"algorithm": "ec", "parameters": curve}, "public_key": point})


@st.composite
def crafted_private_keys(draw: st.DrawFn) -> bytes:
    """A PKCS#8 private key around a crafted public key's algorithm, or a PKCS#1 RSA key, with big numbers."""
    if draw(st.booleans()):
        spki = draw(crafted_public_keys())
        der: bytes = _OneAsymmetricKey(
            {
                "version": draw(st.sampled_from([0, 1])),
                "private_key_algorithm": keys.PrivateKeyAlgorithm.load(
                    AnyPublicKeyInfo.load(spki.dump())["algorithm"].dump()
                ),
                "private_key": draw(st.binary(max_size=4000)),
            }
        ).dump()
        return der
    values = draw(st.lists(st.integers(1, 1 << 16000), min_size=8, max_size=8))
    fields = ["modulus", "public_exponent", "private_exponent", "prime1", "prime2"]
    fields += ["exponent1", "exponent2", "coefficient"]
    rsa_key: bytes = keys.RSAPrivateKey({"version": 0, **dict(zip(fields, values, strict=True))}).dump()
    return rsa_key


@settings(max_examples=60)  # drawing numbers of 30000 bits is slow
@given(crafted_public_keys(), st.sampled_from(["sha256_rsa", "sha256_ecdsa", "sha256_dsa", "ed25519"]))
def test_requests_with_keys_of_any_algorithm_and_size_are_checked_in_bounded_time(
    spki: keys.PublicKeyInfo, signature_algorithm: str
) -> None:
    assume(len(spki.dump()) < MAX_SUBMISSION_BYTES - 512)
    for parse, der in (
        (parse_csr, csr_with_key(spki, signature_algorithm)),
        (parse_spkac, spkac_with_key(spki, signature_algorithm)),
    ):
        refused = outcome(lambda parse=parse, der=der: parse(data=der), RequestRefused)  # type: ignore[misc]
        assert isinstance(refused, RequestRefused)  # the signature is random: never accepted


@settings(max_examples=60)
@given(crafted_private_keys(), st.sampled_from(["der", "base64"]))
def test_private_keys_of_any_algorithm_and_size_are_recognised_in_bounded_time(der: bytes, form: str) -> None:
    assume(len(der) < MAX_SPKAC_BYTES * 3 // 4)
    data = der if form == "der" else base64.b64encode(der)
    for parse in (parse_csr, parse_spkac):
        refused = outcome(lambda parse=parse: parse(data=data), RequestRefused)  # type: ignore[misc]
        assert isinstance(refused, RequestRefused)
        assert refused.code == Refusal.PRIVATE_KEY
