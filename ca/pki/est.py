"""EST (RFC 7030) wire formats: certs-only PKCS#7, request bodies, CSR attributes. No Django.

- :func:`certs_only`: a degenerate CMS SignedData holding only certificates (RFC 7030 4.1.3 and 4.2.3,
  "certs-only CMC Simple PKI Response", RFC 5272 4.1), in DER;
- :func:`base64_body` / :func:`decode_body`: EST's bodies are base64 (``Content-Transfer-Encoding:
  base64``, RFC 7030 4.1.3 and 4.2.1); a body that is DER already is accepted too, as several clients send
  it that way;
- :func:`csr_attributes`: the CsrAttrs a ``/csrattrs`` answer carries (RFC 7030 4.5.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

#: The largest EST request body read (base64 of a CSR of at most 16 KiB, with line breaks, and room).
MAX_BODY_BYTES = 64 * 1024

#: Object identifiers of :func:`csr_attributes`.
OID_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SECP256R1 = "1.2.840.10045.3.1.7"


class BodyError(ValueError):
    """An EST request body that cannot be read; the message says what is wrong in plain words."""


def certs_only(certificates_der: Sequence[bytes]) -> bytes:
    """A certs-only PKCS#7 (CMS SignedData without signers) holding ``certificates_der``, in DER."""
    if not certificates_der:
        raise ValueError("a certs-only PKCS#7 needs at least one certificate")
    certificates = [x509.load_der_x509_certificate(der) for der in certificates_der]
    return pkcs7.serialize_certificates(certificates, serialization.Encoding.DER)


def base64_body(der: bytes) -> bytes:
    """``der`` as an EST body: base64 in lines of 76 characters (RFC 2045), each ending in LF.

    Not CRLF: ``base64 -d`` of GNU coreutils, the decoder of RFC 7030's own shell examples, refuses a
    carriage return as invalid input; EST clients that read CRLF read LF too."""
    return base64.encodebytes(der)


def decode_body(body: bytes, *, what: str = "certificate request") -> bytes:
    """The DER an EST request body carries: base64 (whitespace anywhere), or DER as it is.

    Raises :class:`BodyError` for an empty or oversized body and for anything that is neither.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BodyError(
            f"The request body is {len(body)} bytes; an EST {what} is at most {MAX_BODY_BYTES // 1024} KiB "
            "in base64."
        )
    if not body.strip():
        raise BodyError(
            f"The request body is empty. Send the {what} as base64 DER (Content-Type: application/pkcs10)."
        )
    if body[:1] == b"\x30":  # a DER SEQUENCE: sent without the base64 RFC 7030 asks for
        return body
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BodyError(
            f"The request body is not base64. EST sends the {what} as base64 DER "
            "(Content-Transfer-Encoding: base64): for example `openssl req -outform DER | base64`."
        ) from None
    if not der:
        raise BodyError(f"The request body holds no {what}.")
    return der


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def csr_attributes() -> bytes:
    """The portal's CsrAttrs, DER: it prefers an ECDSA P-256 key and a SHA-256 signature.

    ``SEQUENCE { ecdsa-with-SHA256, SEQUENCE { id-ecPublicKey, SET { secp256r1 } } }`` (the form of RFC
    7030 4.5.2's example). A preference: every key the key policy accepts is taken. The subject is not
    asked for: the certificate's subject comes from the account whatever the request says.
    """
    key_type = _tlv(0x30, _oid(OID_EC_PUBLIC_KEY) + _tlv(0x31, _oid(OID_SECP256R1)))
    return _tlv(0x30, _oid(OID_ECDSA_WITH_SHA256) + key_type)
