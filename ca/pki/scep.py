"""SCEP messages (RFC 8894): reading a client's pkiMessage and writing the server's CertRep.

The CMS structures (RFC 5652) are read and written with asn1crypto; every cryptographic operation (RSA
decryption and encryption of the content-encryption key, DES/3DES/AES-CBC, signatures and their
verification, digests) is done by `cryptography`. Nothing here knows Django: :mod:`ca.services.scep`
chooses the key that decrypts and signs (the CA's, or its RA's), :mod:`enroll.scep_views` the outcome.

A pkiMessage (RFC 8894 section 3.2) is a CMS SignedData (RFC 5652 section 5) whose signed attributes carry
messageType, transactionID, senderNonce (and in a reply pkiStatus, failInfo, recipientNonce) and whose
content is a pkcsPKIEnvelope: a CMS EnvelopedData (RFC 5652 section 6) with one key-transport recipient
(RSA, PKCS #1 v1.5), holding the PKCS #10 request (PKCSReq, RenewalReq), the IssuerAndSubject (CertPoll)
or, in a successful reply, a certs-only SignedData with the issued certificate (RFC 8894 section 3.3.2).

What clients send differs (docs/DEVICES.md): micromdm's scepclient signs with SHA-1 and encrypts with
single DES whatever GetCACaps says; certmonger uses SHA-256 and AES-256 and cannot decrypt DES. Every one
of these is accepted; a reply is encrypted with AES-256-CBC, or 3DES for a client that sent DES or 3DES,
never DES, and signed with the request's digest (SHA-1 only for a client that signed with SHA-1).

Every problem with a message raises :class:`ScepError` with a plain-English reason and the RFC 8894
failInfo to reply with; once the signed attributes could be read, the error carries them
(:attr:`ScepError.header`) so the reply can be a signed CertRep FAILURE that echoes them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from asn1crypto import algos, cms, core, csr, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .der import TooDeep, check_depth
from .profiles import IssuerUrls, issuer_extensions
from .signing import PrivateKeyBackend, sign_certificate


class RsaKeyOperations(Protocol):
    """What SCEP does with the server's RSA key (the CA's, or its RA's), wherever the key is: an
    ``rsa.RSAPrivateKey`` in this process, or the RA key held by the signer process
    (:class:`ca.signer.client.SignerRaKey`). ``decrypt`` raises ValueError when ``ciphertext`` does not
    decrypt (the same for every cause: no padding oracle beyond what RSA PKCS #1 v1.5 is)."""

    def decrypt(self, ciphertext: bytes, padding: PKCS1v15) -> bytes: ...

    def sign(self, data: bytes, padding: PKCS1v15, algorithm: hashes.HashAlgorithm) -> bytes: ...


#: The largest pkiMessage read (after base64 decoding). An RSA-4096 request with its self-signed
#: certificate is about 4 KB; 64 KiB leaves room for any honest client and bounds the work.
MAX_MESSAGE_BYTES = 64 * 1024

#: The longest transactionID kept (RFC 8894 section 3.2.1.1 sets no bound; clients send a hash in
#: hex or base64, well under 100 characters).
MAX_TRANSACTION_ID = 255

#: RFC 8894 section 3.5.2: what this server can do, one keyword a line.
CA_CAPABILITIES = ("POSTPKIOperation", "SHA-256", "SHA-1", "AES", "DES3", "Renewal", "SCEPStandard")


class MessageType(enum.IntEnum):
    """RFC 8894 section 3.2.1.2 messageType values."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in earlier drafts
    GET_CERT = 21
    GET_CRL = 22


class PkiStatus(enum.IntEnum):
    """RFC 8894 section 3.2.1.3 pkiStatus values."""

    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(enum.IntEnum):
    """RFC 8894 section 3.2.1.4 failInfo values."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class ContentCipher(enum.StrEnum):
    """Content-encryption algorithms of a pkcsPKIEnvelope (asn1crypto's names)."""

    DES = "des"
    DES3 = "tripledes_3key"
    AES128 = "aes128_cbc"
    AES192 = "aes192_cbc"
    AES256 = "aes256_cbc"


_KEY_SIZES = {
    ContentCipher.DES: 8,
    ContentCipher.DES3: 24,
    ContentCipher.AES128: 16,
    ContentCipher.AES192: 24,
    ContentCipher.AES256: 32,
}

#: RFC 8894 section 3.2.1: the SCEP attributes (id-VeriSign 2.16.840.1.113733 pki attributes) and
#: failInfoText (id-scep 1.3.6.1.5.5.7.24.1, RFC 8894 section 3.2.1.4).
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"  # noqa: S105 (an OID, not a password)
#: id-kp-cmcRA (RFC 6402 section 2.10): the key of a registration authority for CMC and SCEP.
OID_KP_CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_TRANSACTION_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_TRANSACTION_ID}}}")


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """What a reply echoes: the request's transactionID and senderNonce, the digest it was signed with,
    and the requester's certificate (DER) a reply is encrypted to."""

    transaction_id: str
    sender_nonce: bytes
    digest_algorithm: str
    signer_certificate_der: bytes
    content_cipher: ContentCipher | None = None


class ScepError(ValueError):
    """A pkiMessage that cannot be served: ``reason`` in plain English, ``fail_info`` to reply with, and
    ``header`` when the signed attributes could be read (so a signed CertRep FAILURE can answer)."""

    def __init__(self, reason: str, *, fail_info: FailInfo, header: MessageHeader | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fail_info = fail_info
        self.header = header


@dataclass(frozen=True, slots=True)
class PkiMessage:
    """A client's pkiMessage, its signature verified and its envelope decrypted.

    ``csr_der`` and ``challenge_password`` are set for PKCSReq and RenewalReq; ``signer_public_key_der``
    is the SubjectPublicKeyInfo the message was signed with (for RenewalReq: the current certificate's).
    """

    message_type: MessageType
    header: MessageHeader
    content: bytes
    csr_der: bytes = b""
    challenge_password: str | None = None
    signer_public_key_der: bytes = b""


# --- transport (RFC 8894 section 4.1) ------------------------------------------------------------------


def decode_get_message(*, message: str) -> bytes:
    """The pkiMessage of a GET ``operation=PKIOperation&message=...`` (RFC 8894 section 4.3): base64,
    standard or URL-safe alphabet (micromdm's scepclient sends URL-safe), whitespace ignored."""
    text = re.sub(r"\s+", "", message)
    if len(text) > (MAX_MESSAGE_BYTES * 4) // 3 + 4:
        raise ScepError(
            f"The SCEP message is larger than {MAX_MESSAGE_BYTES} bytes; no SCEP request is that large.",
            fail_info=FailInfo.BAD_REQUEST,
        )
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScepError(
            "The message parameter is not base64; send the DER pkiMessage base64-encoded.",
            fail_info=FailInfo.BAD_REQUEST,
        ) from None


def check_size(*, data: bytes) -> None:
    """Refuse an empty or oversized pkiMessage before any parser sees it."""
    if not data:
        raise ScepError(
            "The SCEP request carries no message; send the pkiMessage as the POST body or as the "
            "message parameter of a GET.",
            fail_info=FailInfo.BAD_REQUEST,
        )
    if len(data) > MAX_MESSAGE_BYTES:
        raise ScepError(
            f"The SCEP message is larger than {MAX_MESSAGE_BYTES} bytes; no SCEP request is that large.",
            fail_info=FailInfo.BAD_REQUEST,
        )


# --- reading a pkiMessage ------------------------------------------------------------------------------


def _attribute(attributes: cms.CMSAttributes, oid: str) -> core.Asn1Value | None:
    """The one value of an attribute: parsed by asn1crypto for the types it knows (messageDigest), a
    ``core.Any`` for the SCEP ones."""
    for attribute in attributes:
        if attribute["type"].dotted == oid:
            values = attribute["values"]
            if len(values) != 1:
                raise ValueError(f"attribute {oid} must have exactly one value")
            value: core.Asn1Value = values[0]
            return value
    return None


def _printable(attributes: cms.CMSAttributes, oid: str) -> str | None:
    value = _attribute(attributes, oid)
    if value is None:
        return None
    if isinstance(value, core.Any):
        value = value.parse(core.PrintableString)
    text: str = value.native
    return text


def _octets(attributes: cms.CMSAttributes, oid: str) -> bytes | None:
    value = _attribute(attributes, oid)
    if value is None:
        return None
    if isinstance(value, core.Any):
        value = value.parse(core.OctetString)
    octets: bytes = value.native
    return octets


def _load_der(
    data: bytes,
    spec: type[core.Asn1Value],
    what: str,
    *,
    header: MessageHeader | None = None,
    decode: bool = True,
) -> core.Asn1Value:
    """``data`` parsed as ``spec`` (its nesting checked first), and with ``decode`` every part decoded
    now so that later reads cannot fail; a :class:`ScepError` otherwise."""
    try:
        check_depth(data)
        value = spec.load(data, strict=True)
        if decode:
            value.native  # noqa: B018
    except TooDeep:
        raise ScepError(
            f"The {what} nests too deeply to be genuine.", fail_info=FailInfo.BAD_REQUEST, header=header
        ) from None
    except (ValueError, TypeError, KeyError, OverflowError):
        raise ScepError(
            f"The {what} is not valid DER; send a pkiMessage as RFC 8894 describes.",
            fail_info=FailInfo.BAD_REQUEST,
            header=header,
        ) from None
    return value


def _hash_for(name: str, header: MessageHeader | None = None) -> hashes.HashAlgorithm:
    try:
        return _DIGESTS[name]()
    except KeyError:
        raise ScepError(
            f"The digest algorithm {name} is not accepted; sign with SHA-256 (or SHA-1).",
            fail_info=FailInfo.BAD_ALG,
            header=header,
        ) from None


def _public_key_of(certificate: asn1_x509.Certificate) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The certificate's public key, read from its SPKI alone (a requester's self-signed certificate may
    carry names `cryptography` refuses, like a PrintableString with '_')."""
    key = serialization.load_der_public_key(certificate["tbs_certificate"]["subject_public_key_info"].dump())
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("unsupported key type")
    return key


def _matches(identifier: core.Choice, certificate: asn1_x509.Certificate) -> bool:
    """Whether a SignerIdentifier or RecipientIdentifier names ``certificate`` (RFC 5652 5.3, 6.2.1)."""
    if identifier.name == "issuer_and_serial_number":
        chosen = identifier.chosen
        return bool(
            chosen["issuer"].dump() == certificate.issuer.dump()
            and chosen["serial_number"].native == certificate.serial_number
        )
    if identifier.name == "subject_key_identifier":
        return bool(identifier.chosen.native == certificate.key_identifier)
    return False


def _verify_signer(
    signer: cms.SignerInfo, certificate: asn1_x509.Certificate, content: bytes, header: MessageHeader
) -> None:
    """RFC 5652 section 5.4 and 5.6: the messageDigest attribute is the content's digest, and the
    signature over the DER SET OF signed attributes verifies with the signer certificate's key."""
    digest = _hash_for(signer["digest_algorithm"]["algorithm"].native, header)
    attributes = signer["signed_attrs"]
    expected = _octets(attributes, "1.2.840.113549.1.9.4")
    computed = hashes.Hash(digest)
    computed.update(content)
    bad = ScepError(
        "The SCEP message's signature does not verify; it was altered or signed with another key.",
        fail_info=FailInfo.BAD_MESSAGE_CHECK,
        header=header,
    )
    if expected is None or expected != computed.finalize():
        raise bad
    signed = b"\x31" + attributes.dump()[1:]  # the [0] IMPLICIT tag is signed as a SET OF (5.4)
    signature = signer["signature"].native
    try:
        key = _public_key_of(certificate)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, PKCS1v15(), digest)
        else:
            key.verify(signature, signed, ec.ECDSA(digest))
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise bad from None


def _cipher(name: str, key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    # Single DES is TripleDES with K1 = K2 = K3.
    if name == ContentCipher.DES:
        key = key * 3
    des = name in (ContentCipher.DES, ContentCipher.DES3)
    algorithm: algorithms.AES | TripleDES = TripleDES(key) if des else algorithms.AES(key)
    return Cipher(algorithm, modes.CBC(iv))


class _EncryptedContentInfo(cms.EncryptedContentInfo):  # type: ignore[misc]
    """EncryptedContentInfo whose encryptedContent is read as it comes: micromdm's scepclient (Go's
    pkcs7) sends the [0] IMPLICIT OCTET STRING in BER's constructed form (chunks), which asn1crypto's
    implicit OCTET STRING refuses; :func:`_octet_chunks` joins them (X.690 8.7.3)."""

    _fields = [
        ("content_type", cms.ContentType),
        ("content_encryption_algorithm", cms.EncryptionAlgorithm),
        ("encrypted_content", core.Any, {"optional": True}),
    ]


class _EnvelopedData(cms.EnvelopedData):  # type: ignore[misc]
    _fields = [
        (name, _EncryptedContentInfo, *params) if name == "encrypted_content_info" else (name, spec, *params)
        for name, spec, *params in cms.EnvelopedData._fields
    ]


class _EnvelopeInfo(cms.ContentInfo):  # type: ignore[misc]
    _oid_specs = {**cms.ContentInfo._oid_specs, "enveloped_data": _EnvelopedData}


def _encrypted_content(contents: bytes) -> bytes:
    """The encryptedContent of an EncryptedContentInfo's contents: its third element, [0] IMPLICIT OCTET
    STRING, primitive or constructed (read here, not by asn1crypto, which refuses the constructed form)."""
    elements, pointer = [], 0
    while pointer < len(contents):
        _c, _m, _t, header, body, trailer = parser.parse(contents[pointer:])
        size = len(header) + len(body) + len(trailer)
        elements.append(contents[pointer : pointer + size])
        pointer += size
    if len(elements) != 3 or elements[2][0] not in (0x80, 0xA0):
        raise ValueError("EncryptedContentInfo without encryptedContent")
    return _octet_chunks(elements[2])


def _octet_chunks(encoded: bytes, *, depth: int = 0) -> bytes:
    """The octets of an OCTET STRING under any tag, primitive or constructed (X.690 8.7): its contents,
    or the contents of its chunks joined."""
    if depth > 4:
        raise ValueError("OCTET STRING chunks nest too deeply")
    _class, method, _tag, _header, contents, _trailer = parser.parse(encoded, strict=True)
    if method == 0:
        return bytes(contents)
    joined, pointer = [], 0
    while pointer < len(contents):
        _c, _m, _t, header, chunk, trailer = parser.parse(contents[pointer:])
        size = len(header) + len(chunk) + len(trailer)
        joined.append(_octet_chunks(contents[pointer : pointer + size], depth=depth + 1))
        pointer += size
    return b"".join(joined)


def _decrypt_envelope(
    data: bytes, *, key: RsaKeyOperations, certificate: asn1_x509.Certificate, header: MessageHeader
) -> tuple[bytes, ContentCipher]:
    """RFC 5652 section 6: decrypt the content-encryption key of the recipient that is ``certificate``,
    then the content. Any failure says the same (no padding oracle on the key or the content)."""
    info = _load_der(data, _EnvelopeInfo, "pkcsPKIEnvelope", header=header, decode=False)
    bad = ScepError(
        "The SCEP message's envelope cannot be decrypted with this server's key; fetch the certificates "
        "again with GetCACert and encrypt to the one for encryption.",
        fail_info=FailInfo.BAD_MESSAGE_CHECK,
        header=header,
    )
    if info["content_type"].native != "enveloped_data":
        raise ScepError(
            "The SCEP message's content is not a pkcsPKIEnvelope (CMS EnvelopedData).",
            fail_info=FailInfo.BAD_REQUEST,
            header=header,
        )
    try:
        enveloped = info["content"]
        enveloped["recipient_infos"].native  # noqa: B018 (decoded now, see _load_der)
        encrypted = enveloped["encrypted_content_info"]
        algorithm = encrypted["content_encryption_algorithm"]
        algorithm.native  # noqa: B018
        ciphertext = _encrypted_content(encrypted.contents)
    except (ValueError, TypeError, KeyError, OverflowError):
        raise ScepError(
            "The SCEP message's pkcsPKIEnvelope is malformed; send a CMS EnvelopedData (RFC 5652 section 6).",
            fail_info=FailInfo.BAD_REQUEST,
            header=header,
        ) from None
    try:
        cipher_name = ContentCipher(algorithm["algorithm"].native)
    except ValueError:
        raise ScepError(
            f"The content encryption {algorithm['algorithm'].native} is not accepted; use AES-CBC or 3DES.",
            fail_info=FailInfo.BAD_ALG,
            header=header,
        ) from None
    recipients = [
        recipient.chosen
        for recipient in enveloped["recipient_infos"]
        if recipient.name == "ktri" and _matches(recipient.chosen["rid"], certificate)
    ]
    if not recipients:
        raise bad
    recipient = recipients[0]
    if recipient["key_encryption_algorithm"]["algorithm"].native != "rsaes_pkcs1v15":
        raise ScepError(
            "The content-encryption key must be encrypted with RSA PKCS #1 v1.5 (rsaEncryption).",
            fail_info=FailInfo.BAD_ALG,
            header=header,
        )
    iv = algorithm["parameters"].native if algorithm["parameters"] else None
    if not isinstance(iv, bytes):
        raise bad
    try:
        content_key = key.decrypt(recipient["encrypted_key"].native, PKCS1v15())
        if len(content_key) != _KEY_SIZES[cipher_name]:
            raise ValueError("content-encryption key of the wrong size")
        decryptor = _cipher(cipher_name, content_key, iv).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        block = 64 if cipher_name in (ContentCipher.DES, ContentCipher.DES3) else 128
        unpadder = padding.PKCS7(block).unpadder()
        return unpadder.update(padded) + unpadder.finalize(), cipher_name
    except ValueError:
        raise bad from None


def _challenge_password(request: csr.CertificationRequest) -> str | None:
    """The challengePassword attribute (PKCS #9, RFC 2985 section 5.4.1) decoded as UTF-8, whatever
    string type carries it (clients put any characters in a PrintableString); None if absent."""
    for attribute in request["certification_request_info"]["attributes"]:
        if attribute["type"].dotted != OID_CHALLENGE_PASSWORD:
            continue
        values = attribute["values"]
        if len(values) != 1:
            raise ValueError("challengePassword must have one value")
        value = values[0]
        chosen = value.chosen if isinstance(value, core.Choice) else value
        raw: bytes = chosen.contents
        if isinstance(chosen, core.BMPString):
            return raw.decode("utf-16-be")
        return raw.decode("utf-8")
    return None


def read_pki_message(
    *,
    data: bytes,
    decrypt_key: RsaKeyOperations,
    decrypt_certificate_der: bytes,
) -> PkiMessage:
    """Verify and open a client's pkiMessage (RFC 8894 section 3.2 and 3.3).

    ``decrypt_key`` and ``decrypt_certificate_der`` are the server's encryption key and certificate (the
    CA's, or its RA's). Raises :class:`ScepError`, and nothing else, whatever ``data`` is; once the signed
    attributes are read, with the header.
    """
    check_size(data=data)
    try:
        return _read_pki_message(
            data=data, decrypt_key=decrypt_key, decrypt_certificate_der=decrypt_certificate_der
        )
    except ScepError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
        # A structure that decoded but holds what no client sends (asn1crypto parses lazily).
        raise ScepError(
            "The SCEP message is malformed; send a pkiMessage as RFC 8894 describes.",
            fail_info=FailInfo.BAD_REQUEST,
        ) from None


def _read_pki_message(
    *,
    data: bytes,
    decrypt_key: RsaKeyOperations,
    decrypt_certificate_der: bytes,
) -> PkiMessage:
    info = _load_der(data, cms.ContentInfo, "SCEP message")
    if info["content_type"].native != "signed_data":
        raise ScepError(
            "The SCEP message is not a CMS SignedData; send a pkiMessage as RFC 8894 section 3.2 describes.",
            fail_info=FailInfo.BAD_REQUEST,
        )
    signed = info["content"]
    signers = signed["signer_infos"]
    if len(signers) != 1 or not signers[0]["signed_attrs"]:
        raise ScepError(
            "A SCEP message has exactly one signer, with signed attributes.", fail_info=FailInfo.BAD_REQUEST
        )
    signer = signers[0]
    attributes = signer["signed_attrs"]
    try:
        message_type_text = _printable(attributes, OID_MESSAGE_TYPE)
        transaction_id = _printable(attributes, OID_TRANSACTION_ID)
        sender_nonce = _octets(attributes, OID_SENDER_NONCE)
    except ValueError:
        raise ScepError(
            "The SCEP message's attributes (messageType, transactionID, senderNonce) are malformed.",
            fail_info=FailInfo.BAD_REQUEST,
        ) from None
    if transaction_id is None or sender_nonce is None or message_type_text is None:
        raise ScepError(
            "The SCEP message lacks messageType, transactionID or senderNonce (RFC 8894 section 3.2.1).",
            fail_info=FailInfo.BAD_REQUEST,
        )
    if not _TRANSACTION_ID.fullmatch(transaction_id):
        raise ScepError(
            f"The transactionID must be 1 to {MAX_TRANSACTION_ID} printable characters.",
            fail_info=FailInfo.BAD_REQUEST,
        )
    certificates = [choice.chosen for choice in signed["certificates"] or [] if choice.name == "certificate"]
    signer_certificate = next((cert for cert in certificates if _matches(signer["sid"], cert)), None)
    if signer_certificate is None:
        raise ScepError(
            "The SCEP message does not include the certificate it is signed with.",
            fail_info=FailInfo.BAD_REQUEST,
        )
    header = MessageHeader(
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        digest_algorithm=signer["digest_algorithm"]["algorithm"].native,
        signer_certificate_der=signer_certificate.dump(),
    )
    encapsulated = signed["encap_content_info"]
    if encapsulated["content_type"].native != "data" or encapsulated["content"].native is None:
        raise ScepError(
            "The SCEP message carries no pkcsPKIEnvelope.", fail_info=FailInfo.BAD_REQUEST, header=header
        )
    content = bytes(encapsulated["content"].contents)
    if encapsulated["content"].method == 1:  # BER constructed OCTET STRING: its chunks joined
        content = core.OctetString.load(encapsulated["content"].dump(), strict=False).native
    _verify_signer(signer, signer_certificate, content, header)
    try:
        message_type = MessageType(int(message_type_text))
    except ValueError:
        raise ScepError(
            f"The messageType {message_type_text!r} is not one this server answers (PKCSReq, RenewalReq, "
            "CertPoll).",
            fail_info=FailInfo.BAD_REQUEST,
            header=header,
        ) from None
    recipient = _load_der(decrypt_certificate_der, asn1_x509.Certificate, "server certificate")
    plain, cipher_name = _decrypt_envelope(content, key=decrypt_key, certificate=recipient, header=header)
    header = MessageHeader(
        transaction_id=header.transaction_id,
        sender_nonce=header.sender_nonce,
        digest_algorithm=header.digest_algorithm,
        signer_certificate_der=header.signer_certificate_der,
        content_cipher=cipher_name,
    )
    signer_spki = signer_certificate["tbs_certificate"]["subject_public_key_info"].dump()
    if message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        request = _load_der(plain, csr.CertificationRequest, "certificate request (PKCS #10)", header=header)
        try:
            password = _challenge_password(request)
        except (ValueError, UnicodeDecodeError):
            raise ScepError(
                "The request's challengePassword is malformed; it must be the enrollment code as text.",
                fail_info=FailInfo.BAD_REQUEST,
                header=header,
            ) from None
        return PkiMessage(
            message_type=message_type,
            header=header,
            content=plain,
            csr_der=plain,
            challenge_password=password,
            signer_public_key_der=signer_spki,
        )
    return PkiMessage(
        message_type=message_type, header=header, content=plain, signer_public_key_der=signer_spki
    )


# --- writing -------------------------------------------------------------------------------------------


def certs_only(*, certificates: Sequence[bytes]) -> bytes:
    """A degenerate certs-only SignedData (RFC 8894 section 3.4, RFC 5652 section 5): no content, no
    signer, the certificates (DER) in the order given."""
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "certificates": [asn1_x509.Certificate.load(der) for der in certificates],
            "signer_infos": [],
        }
    )
    dumped: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return dumped


def envelope(*, content: bytes, recipient_certificate_der: bytes, cipher: ContentCipher) -> bytes:
    """A pkcsPKIEnvelope (RFC 8894 section 3.2.2, RFC 5652 section 6): ``content`` encrypted with a fresh
    key and IV, the key encrypted to the recipient's RSA key (PKCS #1 v1.5), named by issuer and serial."""
    recipient = asn1_x509.Certificate.load(recipient_certificate_der)
    public_key = _public_key_of(recipient)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepError(
            "SCEP replies are encrypted to an RSA key; the request was signed with another kind of key.",
            fail_info=FailInfo.BAD_ALG,
        )
    content_key = os.urandom(_KEY_SIZES[cipher])
    iv = os.urandom(8 if cipher in (ContentCipher.DES, ContentCipher.DES3) else 16)
    padder = padding.PKCS7(64 if len(iv) == 8 else 128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = _cipher(cipher, content_key, iv).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [
                cms.RecipientInfo(
                    name="ktri",
                    value={
                        "version": "v0",
                        "rid": cms.RecipientIdentifier(
                            name="issuer_and_serial_number",
                            value={"issuer": recipient.issuer, "serial_number": recipient.serial_number},
                        ),
                        "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
                        "encrypted_key": public_key.encrypt(content_key, PKCS1v15()),
                    },
                )
            ],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": cipher.value,
                    "parameters": core.OctetString(iv),
                },
                "encrypted_content": ciphertext,
            },
        }
    )
    dumped: bytes = cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()
    return dumped


def _text_attribute(oid: str, value: str) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid, "values": [core.PrintableString(value)]})


def _octets_attribute(oid: str, value: bytes) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid, "values": [core.OctetString(value)]})


def signed_message(
    *,
    content: bytes,
    attributes: Sequence[cms.CMSAttribute],
    signer_certificate_der: bytes,
    signer_key: RsaKeyOperations,
    digest_algorithm: str,
    extra_certificates: Sequence[bytes] = (),
    now: dt.datetime,
) -> bytes:
    """A pkiMessage (RFC 8894 section 3.2): SignedData over ``content`` (as id-data) signed with RSA
    PKCS #1 v1.5 by ``signer_key``, with contentType, messageDigest, signingTime and ``attributes``
    signed (RFC 5652 section 5.3), the signer's certificate included. Both sides use it: the server for
    CertRep, the tests for the requests clients send."""
    digest = _hash_for(digest_algorithm)
    hasher = hashes.Hash(digest)
    hasher.update(content)
    signer = asn1_x509.Certificate.load(signer_certificate_der)
    signed_attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "signing_time", "values": [cms.Time(name="utc_time", value=now)]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hasher.finalize()]}),
            *attributes,
        ]
    )
    to_sign = b"\x31" + signed_attrs.dump()[1:]
    signature = signer_key.sign(to_sign, PKCS1v15(), digest)
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={"issuer": signer.issuer, "serial_number": signer.serial_number},
            ),
            "digest_algorithm": {"algorithm": digest_algorithm},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": signature,
        }
    )
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest_algorithm})],
            "encap_content_info": {"content_type": "data", "content": content},
            "certificates": [signer, *(asn1_x509.Certificate.load(der) for der in extra_certificates)],
            "signer_infos": [signer_info],
        }
    )
    dumped: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return dumped


def reply_cipher(*, request_cipher: ContentCipher | None) -> ContentCipher:
    """AES-256-CBC, or 3DES to a client that sent DES or 3DES (which may know nothing newer); never DES."""
    if request_cipher in (ContentCipher.DES, ContentCipher.DES3):
        return ContentCipher.DES3
    return ContentCipher.AES256


def reply_digest(*, request_digest: str) -> str:
    """The request's digest when this server accepts it (SHA-1 only back to a client that used it),
    otherwise SHA-256."""
    return request_digest if request_digest in _DIGESTS else "sha256"


def cert_rep(
    *,
    header: MessageHeader,
    status: PkiStatus,
    signer_certificate_der: bytes,
    signer_key: RsaKeyOperations,
    issued_certificate_der: bytes | None = None,
    fail_info: FailInfo | None = None,
    fail_text: str = "",
    now: dt.datetime,
) -> bytes:
    """The server's CertRep (RFC 8894 section 3.3.2) to the request ``header`` came from.

    SUCCESS: the content is a pkcsPKIEnvelope, encrypted to the requester's certificate, of a certs-only
    SignedData holding the issued certificate. PENDING and FAILURE: the content is an empty OCTET STRING
    (certmonger expects it present). transactionID and the request's senderNonce (as recipientNonce) are
    echoed; a fresh senderNonce is added; FAILURE carries failInfo and, in plain English, failInfoText.
    """
    attributes = [
        _text_attribute(OID_MESSAGE_TYPE, str(int(MessageType.CERT_REP))),
        _text_attribute(OID_PKI_STATUS, str(int(status))),
        _text_attribute(OID_TRANSACTION_ID, header.transaction_id),
        _octets_attribute(OID_RECIPIENT_NONCE, header.sender_nonce),
        _octets_attribute(OID_SENDER_NONCE, os.urandom(16)),
    ]
    content = b""
    if status == PkiStatus.SUCCESS:
        if issued_certificate_der is None:
            raise ValueError("a SUCCESS CertRep needs the issued certificate")
        content = envelope(
            content=certs_only(certificates=[issued_certificate_der]),
            recipient_certificate_der=header.signer_certificate_der,
            cipher=reply_cipher(request_cipher=header.content_cipher),
        )
    elif status == PkiStatus.FAILURE:
        attributes.append(_text_attribute(OID_FAIL_INFO, str(int(fail_info or FailInfo.BAD_REQUEST))))
        if fail_text:
            attributes.append(
                cms.CMSAttribute({"type": OID_FAIL_INFO_TEXT, "values": [core.UTF8String(fail_text[:500])]})
            )
    return signed_message(
        content=content,
        attributes=attributes,
        signer_certificate_der=signer_certificate_der,
        signer_key=signer_key,
        digest_algorithm=reply_digest(request_digest=header.digest_algorithm),
        now=now,
    )


def request_message(
    *,
    message_type: MessageType,
    content: bytes,
    transaction_id: str,
    sender_nonce: bytes,
    signer_certificate_der: bytes,
    signer_key: rsa.RSAPrivateKey,
    recipient_certificate_der: bytes,
    cipher: ContentCipher,
    digest_algorithm: str,
    now: dt.datetime,
) -> bytes:
    """A client's pkiMessage (PKCSReq, RenewalReq, CertPoll), as SCEP clients build it: ``content``
    enveloped to the server's certificate, then signed. The tests and the certmonger helper test use it."""
    return signed_message(
        content=envelope(content=content, recipient_certificate_der=recipient_certificate_der, cipher=cipher),
        attributes=[
            _text_attribute(OID_MESSAGE_TYPE, str(int(message_type))),
            _text_attribute(OID_TRANSACTION_ID, transaction_id),
            _octets_attribute(OID_SENDER_NONCE, sender_nonce),
        ],
        signer_certificate_der=signer_certificate_der,
        signer_key=signer_key,
        digest_algorithm=digest_algorithm,
        now=now,
    )


def issuer_and_subject(*, issuer_der: bytes, subject_der: bytes) -> bytes:
    """The CertPoll content (RFC 8894 section 3.3.3): the issuer's and the requested subject's Names."""
    sequence = core.Sequence(contents=issuer_der + subject_der)
    dumped: bytes = sequence.dump()
    return dumped


@dataclass(frozen=True, slots=True)
class CertRep:
    """A CertRep read back (by the tests, as a client would): status, failInfo, the echoed values, and
    the issued certificates once the envelope is decrypted with the requester's key."""

    status: PkiStatus
    fail_info: FailInfo | None
    fail_text: str
    transaction_id: str
    recipient_nonce: bytes
    certificates: tuple[bytes, ...]
    digest_algorithm: str
    content_cipher: ContentCipher | None
    content: bytes


def read_cert_rep(
    *, data: bytes, requester_key: rsa.RSAPrivateKey, requester_certificate_der: bytes
) -> CertRep:
    """Verify a CertRep's signature and read it; decrypt a SUCCESS reply's certificates."""
    info = _load_der(data, cms.ContentInfo, "CertRep")
    signed = info["content"]
    signer = signed["signer_infos"][0]
    certificates = [choice.chosen for choice in signed["certificates"] if choice.name == "certificate"]
    signer_certificate = next(cert for cert in certificates if _matches(signer["sid"], cert))
    attributes = signer["signed_attrs"]
    header = MessageHeader(
        transaction_id=_printable(attributes, OID_TRANSACTION_ID) or "",
        sender_nonce=_octets(attributes, OID_SENDER_NONCE) or b"",
        digest_algorithm=signer["digest_algorithm"]["algorithm"].native,
        signer_certificate_der=signer_certificate.dump(),
    )
    content = bytes(signed["encap_content_info"]["content"].contents or b"")
    _verify_signer(signer, signer_certificate, content, header)
    status = PkiStatus(int(_printable(attributes, OID_PKI_STATUS) or "-1"))
    fail = _printable(attributes, OID_FAIL_INFO)
    text_value = _attribute(attributes, OID_FAIL_INFO_TEXT)
    issued: tuple[bytes, ...] = ()
    cipher: ContentCipher | None = None
    if status == PkiStatus.SUCCESS:
        me = asn1_x509.Certificate.load(requester_certificate_der)
        plain, cipher = _decrypt_envelope(content, key=requester_key, certificate=me, header=header)
        inner = cms.ContentInfo.load(plain)["content"]
        issued = tuple(choice.chosen.dump() for choice in inner["certificates"])
    return CertRep(
        status=status,
        fail_info=FailInfo(int(fail)) if fail is not None else None,
        fail_text=text_value.parse(core.UTF8String).native if text_value is not None else "",
        transaction_id=header.transaction_id,
        recipient_nonce=_octets(attributes, OID_RECIPIENT_NONCE) or b"",
        certificates=issued,
        digest_algorithm=header.digest_algorithm,
        content_cipher=cipher,
        content=content,
    )


# --- the RA certificate --------------------------------------------------------------------------------


def ra_certificate_builder(
    *,
    ra_public_key: rsa.RSAPublicKey,
    subject: x509.Name,
    issuer: x509.Certificate,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    urls: IssuerUrls,
) -> x509.CertificateBuilder:
    """The RSA registration-authority certificate of a CA whose own key cannot decrypt (an EC CA, or a CA
    whose key is in a PKCS#11 token), ready to be signed through the CA's key backend
    (:func:`ca.pki.signing.sign_certificate`).

    RFC 8894 section 2.1.1 and 3.1: the RA key decrypts requests (keyEncipherment) and signs replies
    (digitalSignature); keyUsage is critical (RFC 5280 4.2.1.3); extendedKeyUsage id-kp-cmcRA (RFC 6402
    section 2.10), the purpose SCEP and CMC give a registration authority; not a CA.
    """
    public_key = ra_public_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([OID_KP_CMC_RA]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return issuer_extensions(builder, issuer=issuer, urls=urls)


def build_ra_certificate(
    *,
    ra_key: rsa.RSAPrivateKey,
    subject: x509.Name,
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    urls: IssuerUrls,
) -> x509.Certificate:
    """:func:`ra_certificate_builder` signed with a CA key this process holds."""
    builder = ra_certificate_builder(
        ra_public_key=ra_key.public_key(),
        subject=subject,
        issuer=issuer,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        urls=urls,
    )
    return sign_certificate(builder=builder, backend=PrivateKeyBackend(key=issuer_key))
