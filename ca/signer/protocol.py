"""The signer's wire format: length-prefixed JSON over a Unix stream socket.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object). A connection carries
any number of request/reply pairs, one at a time (the client keeps one connection per thread: measured in
``bench/signer.py``, a connection per request costs more than the signature).

Request: ``{"version": 1, "operation": "sign", "ca": SLUG, "purpose": "certificate" | "crl" |
"ocsp-response", "hash": "sha256" | "sha384", "data": BASE64}``, where ``data`` is the DER to-be-signed
value (:class:`ca.pki.signing.Purpose`); or ``{"version": 1, "operation": "ping"}``.

Reply: ``{"version": 1, "ok": true, "signature": BASE64}`` (``ping``: no signature), or
``{"version": 1, "ok": false, "error": TEXT}``: the reason, in words an operator reads.
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
#: The largest reply a client reads (a signature and its envelope, or a reason).
MAX_REPLY = 64 * 1024

HASHES: dict[str, type[SignatureHash]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}


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


def ping_message() -> dict[str, Any]:
    return {"version": VERSION, "operation": "ping"}


def parse_request(payload: bytes) -> SignRequest | Ping:
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
    if operation != "sign":
        raise ProtocolError(f"unknown operation {str(operation)[:40]!r}")
    ca, purpose, hash_name, data = (message.get(k) for k in ("ca", "purpose", "hash", "data"))
    if not isinstance(ca, str) or not 0 < len(ca) <= 64:
        raise ProtocolError("'ca' must be a CA's slug")
    try:
        what = Purpose(str(purpose))
    except ValueError:
        raise ProtocolError(f"unknown purpose {str(purpose)[:40]!r}") from None
    if hash_name not in HASHES:
        raise ProtocolError(f"unknown hash {str(hash_name)[:40]!r}; sha256 or sha384")
    if not isinstance(data, str) or len(data) > MAX_DATA[what] * 4 // 3 + 4:
        raise ProtocolError(f"'data' must be base64 of at most {MAX_DATA[what]} bytes for a {what.value}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'data' is not base64") from None
    if not raw:
        raise ProtocolError("'data' is empty")
    return SignRequest(ca=ca, purpose=what, hash_name=str(hash_name), data=raw)


def ok_reply(signature: bytes | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"version": VERSION, "ok": True}
    if signature is not None:
        reply["signature"] = base64.b64encode(signature).decode("ascii")
    return reply


def error_reply(reason: str) -> dict[str, Any]:
    return {"version": VERSION, "ok": False, "error": reason}


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    signature: bytes | None
    error: str


def parse_reply(payload: bytes) -> Reply:
    try:
        message = json.loads(payload.decode("utf-8"))
        if not isinstance(message, dict) or message.get("version") != VERSION:
            raise ProtocolError("the signer answered in another protocol version")
        if message.get("ok") is True:
            signature = message.get("signature")
            raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else None
            return Reply(ok=True, signature=raw, error="")
        return Reply(ok=False, signature=None, error=str(message.get("error") or "no reason given"))
    except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
        raise ProtocolError(f"the signer's answer is not understood ({exc})") from None
