"""The signer's wire format: length-prefixed JSON over a Unix stream socket.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object). A connection carries
any number of request/reply pairs, one at a time (the client keeps one connection per thread: measured in
``bench/signer.py``, a connection per request costs more than the signature).

Request: ``{"version": 1, "operation": "sign", "ca": SLUG, "purpose": "certificate" | "crl" |
"ocsp-response", "hash": "sha256" | "sha384", "data": BASE64}``, where ``data`` is the DER to-be-signed
value (:class:`ca.pki.signing.Purpose`); or ``{"version": 1, "operation": "ping"}``; or a batch of
certificates: ``{"version": 1, "operation": "sign-many", "ca": SLUG, "purpose": "certificate", "hash": ...,
"lint": BOOL, "items": [BASE64, ...]}`` (at most :data:`MAX_BATCH` TBSCertificates; ``lint`` asks the signer
to lint each one before it signs, whatever its own setting).

SCEP's RA key (never a CA key): ``{"version": 1, "operation": "ra-decrypt", "ca": SLUG, "ra": SHA256-HEX,
"padding": "pkcs1v15", "data": BASE64}`` decrypts a CMS content-encryption key (RFC 8894 3.2.1.2), and
``{"version": 1, "operation": "ra-sign", "ca": SLUG, "ra": SHA256-HEX, "hash": "sha1" | "sha256" |
"sha384" | "sha512", "data": BASE64}`` signs the DER of a SignerInfo's signed attributes (RFC 5652 5.4)
with RSA PKCS #1 v1.5; ``ra`` is the SHA-256 fingerprint of the RA certificate. Their result comes as
``signature``; a ciphertext that does not decrypt is ``{"ok": false, "undecryptable": true}``.

Reply: ``{"version": 1, "ok": true, "signature": BASE64}`` (``ping``: no signature; ``sign-many``:
``"results": [{"signature": BASE64} | {"error": TEXT, "lint": BOOL}, ...]``, one per item in order), or
``{"version": 1, "ok": false, "error": TEXT}``: the reason, in words an operator reads, with
``"unavailable": true`` when the CA key cannot sign at all (token missing, wrong PIN) and nothing was signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes

from ca.pki.signing import Purpose, SignatureHash

VERSION = 1
_HEADER = struct.Struct(">I")

#: The largest to-be-signed value of each purpose, in bytes. A certificate's TBS is a few hundred bytes;
#: an OCSP ResponseData with one answer a few hundred; a CRL of a million entries about 40 MB.
MAX_DATA = {
    Purpose.CERTIFICATE: 64 * 1024,
    Purpose.OCSP_RESPONSE: 256 * 1024,
    Purpose.CRL: 64 * 1024 * 1024,
}
#: The largest frame either side reads: the largest data in base64, and room for the rest.
MAX_FRAME = MAX_DATA[Purpose.CRL] * 4 // 3 + 4096
#: The most certificates in one ``sign-many`` request (the client splits larger batches).
MAX_BATCH = 500
#: The largest reply a client reads (a batch's signatures or reasons and their envelope).
MAX_REPLY = 8 * 1024 * 1024

HASHES: dict[str, type[SignatureHash]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}
#: The digests of SCEP's CMS signatures the RA key makes (SHA-1 only back to a client that used it).
RA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
#: The largest RA ciphertext (an RSA-4096 block is 512 bytes) and signed-attributes value.
MAX_RA_DECRYPT = 1024
MAX_RA_SIGN = 64 * 1024


class ProtocolError(ValueError):
    """A frame or message that does not follow the protocol; the text says what is wrong."""


class Closed(ConnectionError):
    """The other side closed the connection before a whole frame arrived."""


@dataclass(frozen=True, slots=True)
class SignRequest:
    ca: str
    purpose: Purpose
    hash_name: str
    data: bytes

    @property
    def algorithm(self) -> SignatureHash:
        return HASHES[self.hash_name]()


@dataclass(frozen=True, slots=True)
class SignManyRequest:
    ca: str
    purpose: Purpose
    hash_name: str
    items: tuple[bytes, ...]
    lint: bool

    @property
    def algorithm(self) -> SignatureHash:
        return HASHES[self.hash_name]()


@dataclass(frozen=True, slots=True)
class RaRequest:
    """An operation with a CA's SCEP RA key: ``decrypt`` (hash_name "") or ``sign``."""

    operation: str
    ca: str
    ra: str
    hash_name: str
    data: bytes

    @property
    def algorithm(self) -> hashes.HashAlgorithm:
        return RA_HASHES[self.hash_name]()


@dataclass(frozen=True, slots=True)
class Ping:
    pass


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = sock.recv(min(missing, 1 << 20))
        if not chunk:
            raise Closed("the connection closed in the middle of a frame")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_header(sock: socket.socket) -> int | None:
    """The length of the next frame, or None when the other side closed the connection between frames."""
    first = sock.recv(_HEADER.size)
    if not first:
        return None
    if len(first) < _HEADER.size:
        first += recv_exactly(sock, _HEADER.size - len(first))
    (size,) = _HEADER.unpack(first)
    return int(size)


def read_frame(sock: socket.socket, *, limit: int) -> bytes | None:
    """One frame's payload, None at a clean end of the connection; :class:`ProtocolError` if too large."""
    size = read_header(sock)
    if size is None:
        return None
    if size > limit:
        raise ProtocolError(f"the message has {size} bytes, more than the {limit} allowed")
    return recv_exactly(sock, size)


def write_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    payload = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def sign_message(*, ca: str, purpose: Purpose, algorithm: SignatureHash, data: bytes) -> dict[str, Any]:
    return {
        "version": VERSION,
        "operation": "sign",
        "ca": ca,
        "purpose": purpose.value,
        "hash": algorithm.name,
        "data": base64.b64encode(data).decode("ascii"),
    }


def sign_many_message(
    *, ca: str, purpose: Purpose, algorithm: SignatureHash, items: list[bytes], lint: bool
) -> dict[str, Any]:
    return {
        "version": VERSION,
        "operation": "sign-many",
        "ca": ca,
        "purpose": purpose.value,
        "hash": algorithm.name,
        "lint": lint,
        "items": [base64.b64encode(item).decode("ascii") for item in items],
    }


def ra_message(*, operation: str, ca: str, ra: str, data: bytes, hash_name: str = "") -> dict[str, Any]:
    message: dict[str, Any] = {
        "version": VERSION,
        "operation": operation,
        "ca": ca,
        "ra": ra,
        "data": base64.b64encode(data).decode("ascii"),
    }
    if operation == "ra-decrypt":
        message["padding"] = "pkcs1v15"
    else:
        message["hash"] = hash_name
    return message


def _ra(message: dict[str, Any], operation: str) -> RaRequest:
    ca, ra, data = (message.get(k) for k in ("ca", "ra", "data"))
    if not isinstance(ca, str) or not 0 < len(ca) <= 64:
        raise ProtocolError("'ca' must be a CA's slug")
    if not isinstance(ra, str) or len(ra) != 64 or not all(c in "0123456789abcdef" for c in ra):
        raise ProtocolError("'ra' must be the lower-case hex SHA-256 fingerprint of an RA certificate")
    hash_name = ""
    if operation == "ra-decrypt":
        if message.get("padding") != "pkcs1v15":
            raise ProtocolError("'padding' must be pkcs1v15 (RFC 8894 rsaEncryption key transport)")
        limit = MAX_RA_DECRYPT
    else:
        hash_name = str(message.get("hash"))
        if hash_name not in RA_HASHES:
            raise ProtocolError(f"unknown hash {hash_name[:40]!r}; {', '.join(RA_HASHES)}")
        limit = MAX_RA_SIGN
    raw = _decoded(data, limit=limit, what=operation)
    return RaRequest(operation=operation, ca=ca, ra=ra, hash_name=hash_name, data=raw)


def ping_message() -> dict[str, Any]:
    return {"version": VERSION, "operation": "ping"}


def _base64(data: object, *, what: Purpose) -> bytes:
    return _decoded(data, limit=MAX_DATA[what], what=f"a {what.value}")


def _decoded(data: object, *, limit: int, what: str) -> bytes:
    """The bytes of ``data``, base64 of at most ``limit`` bytes (checked before decoding), not empty."""
    if not isinstance(data, str) or len(data) > limit * 4 // 3 + 4:
        raise ProtocolError(f"'data' must be base64 of at most {limit} bytes for {what}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'data' is not base64") from None
    if not raw:
        raise ProtocolError("'data' is empty")
    return raw


def _sign_many(message: dict[str, Any]) -> SignManyRequest:
    ca, purpose, hash_name, items, lint = (message.get(k) for k in ("ca", "purpose", "hash", "items", "lint"))
    if not isinstance(ca, str) or not 0 < len(ca) <= 64:
        raise ProtocolError("'ca' must be a CA's slug")
    if purpose != Purpose.CERTIFICATE.value:
        raise ProtocolError("'sign-many' signs certificates only")
    if not isinstance(hash_name, str) or hash_name not in HASHES:  # a JSON list is not hashable
        raise ProtocolError(f"unknown hash {str(hash_name)[:40]!r}; sha256 or sha384")
    if not isinstance(lint, bool):
        raise ProtocolError("'lint' must be true or false")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise ProtocolError(f"'items' must be a list of 1 to {MAX_BATCH} TBSCertificates")
    raw = tuple(_base64(item, what=Purpose.CERTIFICATE) for item in items)
    return SignManyRequest(ca=ca, purpose=Purpose.CERTIFICATE, hash_name=str(hash_name), items=raw, lint=lint)


def parse_request(payload: bytes) -> SignRequest | SignManyRequest | RaRequest | Ping:
    """The request in ``payload``; :class:`ProtocolError` naming the first thing wrong with it."""
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("the message is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("the message is not a JSON object")
    if message.get("version") != VERSION:
        raise ProtocolError(f"protocol version {message.get('version')!r} is not {VERSION}")
    operation = message.get("operation")
    if operation == "ping":
        return Ping()
    if operation == "sign-many":
        return _sign_many(message)
    if operation in ("ra-decrypt", "ra-sign"):
        return _ra(message, str(operation))
    if operation != "sign":
        raise ProtocolError(f"unknown operation {str(operation)[:40]!r}")
    ca, purpose, hash_name, data = (message.get(k) for k in ("ca", "purpose", "hash", "data"))
    if not isinstance(ca, str) or not 0 < len(ca) <= 64:
        raise ProtocolError("'ca' must be a CA's slug")
    try:
        what = Purpose(str(purpose))
    except ValueError:
        raise ProtocolError(f"unknown purpose {str(purpose)[:40]!r}") from None
    if not isinstance(hash_name, str) or hash_name not in HASHES:  # a JSON list is not hashable
        raise ProtocolError(f"unknown hash {str(hash_name)[:40]!r}; sha256 or sha384")
    return SignRequest(ca=ca, purpose=what, hash_name=str(hash_name), data=_base64(data, what=what))


def ok_reply(signature: bytes | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"version": VERSION, "ok": True}
    if signature is not None:
        reply["signature"] = base64.b64encode(signature).decode("ascii")
    return reply


def error_reply(reason: str, *, unavailable: bool = False, undecryptable: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {"version": VERSION, "ok": False, "error": reason}
    if unavailable:
        reply["unavailable"] = True
    if undecryptable:
        reply["undecryptable"] = True
    return reply


@dataclass(frozen=True, slots=True)
class ItemRefused:
    """One item of a batch the signer refused: why, and whether lint refused it."""

    reason: str
    lint: bool


def many_reply(results: list[bytes | ItemRefused]) -> dict[str, Any]:
    return {
        "version": VERSION,
        "ok": True,
        "results": [
            {"error": result.reason, "lint": result.lint}
            if isinstance(result, ItemRefused)
            else {"signature": base64.b64encode(result).decode("ascii")}
            for result in results
        ],
    }


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    signature: bytes | None
    error: str
    unavailable: bool = False
    results: tuple[bytes | ItemRefused, ...] | None = None
    undecryptable: bool = False


def _result(entry: object) -> bytes | ItemRefused:
    if not isinstance(entry, dict):
        raise ProtocolError("a batch result is not an object")
    if isinstance(signature := entry.get("signature"), str):
        return base64.b64decode(signature, validate=True)
    return ItemRefused(reason=str(entry.get("error") or "no reason given"), lint=entry.get("lint") is True)


def parse_reply(payload: bytes) -> Reply:
    try:
        message = json.loads(payload.decode("utf-8"))
        if not isinstance(message, dict) or message.get("version") != VERSION:
            raise ProtocolError("the signer answered in another protocol version")
        if message.get("ok") is True:
            signature = message.get("signature")
            raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else None
            entries = message.get("results")
            results = tuple(_result(entry) for entry in entries) if isinstance(entries, list) else None
            return Reply(ok=True, signature=raw, error="", results=results)
        reason = str(message.get("error") or "no reason given")
        return Reply(
            ok=False,
            signature=None,
            error=reason,
            unavailable=message.get("unavailable") is True,
            undecryptable=message.get("undecryptable") is True,
        )
    except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
        raise ProtocolError(f"the signer's answer is not understood ({exc})") from None
