"""The signer's socket: created 0660, garbage and oversized messages refused without a crash, a stale socket
replaced, another file never removed, and a stopped signer named as such to whoever asks it to sign."""

from __future__ import annotations

import json
import socket
import stat
import struct
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from ca.models import CertificateAuthority
from ca.pki.errors import CAKeyError
from ca.signer import client, protocol
from ca.signer.server import Signer, SignerStartError
from tests.signer.conftest import draft


def _ask(path: str, frame: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(frame)
        payload = protocol.read_frame(sock, limit=protocol.MAX_REPLY)
    assert payload is not None
    answer = json.loads(payload)
    assert isinstance(answer, dict)
    return answer


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _message(**fields: object) -> bytes:
    base: dict[str, object] = {"version": 1, "operation": "sign", "ca": "test-root", "purpose": "crl"}
    return _frame(json.dumps({**base, "hash": "sha256", "data": "AAAA", **fields}).encode())


def test_the_socket_is_0660_and_answers_a_ping(signer: Signer) -> None:
    assert stat.S_IMODE(Path(signer.path).stat().st_mode) == 0o660
    client.ping(path=signer.path)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_frame(b"\xff\xfe not json"), "not JSON"),
        (_frame(b"[1, 2]"), "not a JSON object"),
        (_frame(b'{"version": 2, "operation": "ping"}'), "protocol version 2"),
        (_frame(b'{"version": 1, "operation": "decrypt"}'), "unknown operation"),
        (_message(purpose="private-key"), "unknown purpose"),
        (_message(hash="md5"), "unknown hash"),
        (_message(hash=["sha256"]), "unknown hash"),  # not hashable: once a thread's traceback
        (
            _message(operation="sign-many", purpose="certificate", hash={}, lint=True, items=["AAAA"]),
            "unknown hash",
        ),
        (_message(data="not base64!"), "not base64"),
        (_message(data=""), "empty"),
        (_message(ca=""), "slug"),
        (_message(purpose="certificate", data="A" * 200_000), "at most 65536 bytes"),
        (struct.pack(">I", protocol.MAX_FRAME + 1), "more than the"),
    ],
)
def test_it_refuses_garbage_and_oversized_messages_and_keeps_serving(
    signer: Signer, frame: bytes, reason: str
) -> None:
    answer = _ask(signer.path, frame)
    assert answer["ok"] is False
    assert reason in str(answer["error"])
    client.ping(path=signer.path)  # still serving


def test_it_refuses_a_ca_it_does_not_know(signer: Signer, ca: CertificateAuthority) -> None:
    answer = _ask(signer.path, _message(ca="no-such-ca"))
    assert answer == {"version": 1, "ok": False, "error": "there is no CA 'no-such-ca'"}


def test_a_stopped_signer_is_named_and_nothing_is_signed(
    tmp_path: Path, ca: CertificateAuthority, alice: User
) -> None:
    work = draft(ca, alice, approver=None)
    with pytest.raises(CAKeyError, match="The signer is not running"):
        work.sign(str(tmp_path / "nobody-listens.sock"))


def test_it_replaces_a_stale_socket_but_never_another_file(tmp_path: Path, db: None) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_behind:
        left_behind.bind(str(stale))  # bound, never listening: what a killed signer leaves
    server = Signer(path=str(stale))
    server.bind()
    assert server.listener is not None
    server.listener.close()
    other = tmp_path / "precious.txt"
    other.write_text("keep me")
    with pytest.raises(SignerStartError, match="is not a socket"):
        Signer(path=str(other)).bind()
    assert other.read_text() == "keep me"
