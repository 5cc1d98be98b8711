"""SCEP messages (ca.pki.scep, RFC 8894): what each client sends is read, replies are what clients read,
and nothing a client can send raises anything but ScepError (table-driven bad inputs and hypothesis)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.pki import scep
from ca.pki.profiles import IssuerUrls
from tests.helpers import fixture_bytes

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Party:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def party(name: str) -> Party:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return Party(key, certificate)


@pytest.fixture(scope="module")
def server() -> Party:
    return party("SCEP RA")


@pytest.fixture(scope="module")
def device() -> Party:
    return party("device")


def csr_der(key: rsa.RSAPrivateKey, challenge: bytes | None = "kod-é_1".encode()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "router")])
    )
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def request(
    device: Party,
    server: Party,
    *,
    cipher: scep.ContentCipher = scep.ContentCipher.AES256,
    digest: str = "sha256",
    message_type: scep.MessageType = scep.MessageType.PKCS_REQ,
    content: bytes | None = None,
    transaction_id: str = "tx-1",
) -> bytes:
    return scep.request_message(
        message_type=message_type,
        content=csr_der(device.key) if content is None else content,
        transaction_id=transaction_id,
        sender_nonce=b"n" * 16,
        signer_certificate_der=device.der,
        signer_key=device.key,
        recipient_certificate_der=server.der,
        cipher=cipher,
        digest_algorithm=digest,
        now=NOW,
    )


def read(data: bytes, server: Party) -> scep.PkiMessage:
    return scep.read_pki_message(data=data, decrypt_key=server.key, decrypt_certificate_der=server.der)


# --- what clients send ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cipher", "digest"),
    [
        (scep.ContentCipher.DES, "sha1"),  # micromdm's scepclient, whatever GetCACaps says
        (scep.ContentCipher.AES256, "sha256"),  # certmonger
        (scep.ContentCipher.DES3, "sha256"),
        (scep.ContentCipher.AES128, "sha512"),
        (scep.ContentCipher.AES192, "sha384"),
    ],
)
def test_it_reads_a_pkcsreq_whatever_cipher_and_digest_the_client_chose(
    device: Party, server: Party, cipher: scep.ContentCipher, digest: str
) -> None:
    message = read(request(device, server, cipher=cipher, digest=digest), server)
    assert message.message_type == scep.MessageType.PKCS_REQ
    assert message.challenge_password == "kod-é_1"  # the bytes decoded as UTF-8
    assert message.header.transaction_id == "tx-1"
    assert message.header.sender_nonce == b"n" * 16
    assert message.header.content_cipher == cipher
    assert message.header.digest_algorithm == digest
    assert x509.load_der_x509_csr(message.csr_der).public_key() == device.key.public_key()


def test_it_reads_the_pkcsreq_scepclient_really_sent() -> None:
    """Captured from Debian's scepclient: SHA-1, single DES, a constructed (BER) encryptedContent."""
    key = serialization.load_pem_private_key(fixture_bytes("scepclient-pkcsreq-ra.key.pem"), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    certificate = x509.load_pem_x509_certificate(fixture_bytes("scepclient-pkcsreq-ra.pem"))
    message = scep.read_pki_message(
        data=fixture_bytes("scepclient-pkcsreq.der"),
        decrypt_key=key,
        decrypt_certificate_der=certificate.public_bytes(serialization.Encoding.DER),
    )
    assert message.message_type == scep.MessageType.PKCS_REQ
    assert message.challenge_password == "abc"
    assert message.header.content_cipher == scep.ContentCipher.DES
    assert message.header.digest_algorithm == "sha1"
    x509.load_der_x509_csr(message.csr_der)


def test_a_get_message_is_base64_in_either_alphabet(device: Party, server: Party) -> None:
    data = request(device, server)
    for encoded in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode().rstrip("=")):
        assert scep.decode_get_message(message=encoded) == data


# --- replies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "replied"),
    [
        (scep.ContentCipher.DES, scep.ContentCipher.DES3),  # never DES back
        (scep.ContentCipher.DES3, scep.ContentCipher.DES3),
        (scep.ContentCipher.AES128, scep.ContentCipher.AES256),
        (scep.ContentCipher.AES256, scep.ContentCipher.AES256),
        (None, scep.ContentCipher.AES256),
    ],
)
def test_replies_are_aes_or_3des_never_des(
    sent: scep.ContentCipher | None, replied: scep.ContentCipher
) -> None:
    assert scep.reply_cipher(request_cipher=sent) == replied


def test_a_success_carries_the_certificate_enveloped_to_the_requester(device: Party, server: Party) -> None:
    message = read(request(device, server, cipher=scep.ContentCipher.DES, digest="sha1"), server)
    issued = party("issued").der
    reply = scep.cert_rep(
        header=message.header,
        status=scep.PkiStatus.SUCCESS,
        signer_certificate_der=server.der,
        signer_key=server.key,
        issued_certificate_der=issued,
        now=NOW,
    )
    answer = scep.read_cert_rep(data=reply, requester_key=device.key, requester_certificate_der=device.der)
    assert answer.status == scep.PkiStatus.SUCCESS
    assert answer.certificates == (issued,)
    assert answer.transaction_id == "tx-1"
    assert answer.recipient_nonce == b"n" * 16
    assert answer.content_cipher == scep.ContentCipher.DES3
    assert answer.digest_algorithm == "sha1"


@pytest.mark.parametrize("status", [scep.PkiStatus.PENDING, scep.PkiStatus.FAILURE])
def test_pending_and_failure_have_an_empty_content_and_echo_the_request(
    device: Party, server: Party, status: scep.PkiStatus
) -> None:
    message = read(request(device, server), server)
    reply = scep.cert_rep(
        header=message.header,
        status=status,
        signer_certificate_der=server.der,
        signer_key=server.key,
        fail_info=scep.FailInfo.BAD_REQUEST if status == scep.PkiStatus.FAILURE else None,
        fail_text="The enrollment code is not valid." if status == scep.PkiStatus.FAILURE else "",
        now=NOW,
    )
    answer = scep.read_cert_rep(data=reply, requester_key=device.key, requester_certificate_der=device.der)
    assert answer.status == status
    assert answer.content == b""
    encapsulated = cms.ContentInfo.load(reply)["content"]["encap_content_info"]
    assert encapsulated["content"].contents == b""  # present and empty, as certmonger wants it
    assert answer.transaction_id == "tx-1"
    assert answer.recipient_nonce == b"n" * 16
    if status == scep.PkiStatus.FAILURE:
        assert answer.fail_info == scep.FailInfo.BAD_REQUEST
        assert answer.fail_text == "The enrollment code is not valid."
    else:
        assert answer.fail_info is None


def test_the_ra_certificate_decrypts_and_signs_and_is_no_ca() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ra = scep.build_ra_certificate(
        ra_key=ra_key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC CA SCEP RA")]),
        issuer=ca,
        issuer_key=ca_key,
        serial=2,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=3650),
        urls=IssuerUrls(crl_url="http://pki.example/crl", ca_issuers_url="http://pki.example/ca"),
    )
    usage = ra.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert not ra.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(ra.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [scep.OID_KP_CMC_RA]
    assert ra.not_valid_after_utc == ca.not_valid_after_utc  # never outlives its CA
    ra.verify_directly_issued_by(ca)


# --- what no client should send ------------------------------------------------------------------------


def _tampered_signature(data: bytes) -> bytes:
    """The signature's last byte (the last bytes of a pkiMessage) changed."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _tampered_content(device: Party, server: Party) -> bytes:
    """The envelope changed after signing: the messageDigest no longer matches."""
    info = cms.ContentInfo.load(request(device, server))
    envelope: bytes = info["content"]["encap_content_info"]["content"].native
    data: bytes = info.dump()
    start = data.index(envelope) + len(envelope) - 1
    return data[:start] + bytes([data[start] ^ 0x01]) + data[start + 1 :]


REQ, CHECK = scep.FailInfo.BAD_REQUEST, scep.FailInfo.BAD_MESSAGE_CHECK
PEM = b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n"
GET_CRL = scep.MessageType.GET_CRL
Build = Callable[[Party, Party, Party], bytes]

#: (case, build(device, server, another server), failInfo or None when readable, header expected)
BAD_MESSAGES: list[tuple[str, Build, scep.FailInfo | None, bool]] = [
    ("empty", lambda d, s, x: b"", REQ, False),
    ("oversized", lambda d, s, x: b"0" * (scep.MAX_MESSAGE_BYTES + 1), REQ, False),
    ("garbage", lambda d, s, x: b"\x00garbage\xff" * 50, REQ, False),
    ("a PEM text", lambda d, s, x: PEM, REQ, False),
    ("nested 2000 deep", lambda d, s, x: b"\x30\x80" * 2000, REQ, False),
    ("a certificate", lambda d, s, x: d.der, REQ, False),
    ("a certs-only PKCS#7", lambda d, s, x: scep.certs_only(certificates=[d.der]), REQ, False),
    ("altered after signing", lambda d, s, x: _tampered_content(d, s), CHECK, True),
    ("a signature altered", lambda d, s, x: _tampered_signature(request(d, s)), CHECK, True),
    ("encrypted to another server", lambda d, s, x: request(d, x), CHECK, True),
    ("a GetCRL", lambda d, s, x: request(d, s, message_type=GET_CRL, content=b"0\0"), None, True),
    ("a CSR that is no CSR", lambda d, s, x: request(d, s, content=b"not a request"), REQ, True),
    ("a transactionID too long", lambda d, s, x: request(d, s, transaction_id="t" * 300), REQ, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "fail_info", "has_header"),
    [pytest.param(build, info, header, id=case) for case, build, info, header in BAD_MESSAGES],
)
def test_a_bad_message_is_a_scep_error_with_a_plain_reason(
    device: Party, server: Party, build: Build, fail_info: scep.FailInfo | None, has_header: bool
) -> None:
    stranger = party("another server")
    data = build(device, server, stranger)
    if fail_info is None:  # readable, just not offered: the view answers it with a FAILURE
        assert read(data, server).message_type == scep.MessageType.GET_CRL
        return
    with pytest.raises(scep.ScepError) as raised:
        read(data, server)
    assert raised.value.fail_info == fail_info
    assert raised.value.reason.endswith(".")
    assert (raised.value.header is not None) == has_header


@pytest.mark.parametrize(
    ("message", "words"),
    [("not base64 at all!", "not base64"), ("A" * (scep.MAX_MESSAGE_BYTES * 2), "larger than")],
)
def test_a_bad_get_message_is_refused(message: str, words: str) -> None:
    with pytest.raises(scep.ScepError, match=words):
        scep.decode_get_message(message=message)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_no_bytes_raise_anything_but_scep_error(data: bytes) -> None:
    with contextlib.suppress(scep.ScepError):
        scep.read_pki_message(data=data, decrypt_key=_SERVER.key, decrypt_certificate_der=_SERVER.der)


_SERVER = party("hypothesis RA")
_DEVICE = party("hypothesis device")
_VALID = request(_DEVICE, _SERVER)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(_VALID) - 1), st.integers(min_value=1, max_value=255))
def test_a_changed_byte_anywhere_is_read_or_refused_never_a_crash(index: int, flip: int) -> None:
    changed = _VALID[:index] + bytes([_VALID[index] ^ flip]) + _VALID[index + 1 :]
    with contextlib.suppress(scep.ScepError):
        scep.read_pki_message(data=changed, decrypt_key=_SERVER.key, decrypt_certificate_der=_SERVER.der)
