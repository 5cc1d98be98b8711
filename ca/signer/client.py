"""The web side of the signer: a :class:`ca.pki.signing.KeyBackend` that asks ``manage.py signer``.

:func:`ca.services.keys.key_backend` returns a :class:`SignerBackend` when ``ENROLL_SIGNER_SOCKET`` is set
(except in the signer itself), so issuance, CRLs and OCSP take the one signing path of
:mod:`ca.pki.signing` whether the key is in this process or not. The public key comes from the CA's
certificate: only signing needs the signer. Each thread keeps one connection open (a new one costs more
than an ECDSA signature); a connection the signer closed while idle is replaced before a request is sent,
never after, so a request is never sent twice.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from django.conf import settings

from ca.models import CertificateAuthority
from ca.pki.errors import CAKeyError, KeyUnavailableError
from ca.pki.signing import CAPublicKey, Purpose, SignatureHash, Signed
from ca.signer import protocol

#: Seconds to wait for an answer: a signature takes milliseconds; a million-entry CRL is re-checked and
#: signed in seconds.
TIMEOUT = 120.0

SIGNER_NOT_RUNNING = (
    "The signer is not running, so nothing was signed and nothing changed. Ask the operator to start it "
    "(systemctl start enroll-signer, or manage.py signer), then try again."
)


class _Role(threading.local):
    """Set on the signer's own threads: they sign with the key they hold, never through the socket."""

    signer: bool = False


role = _Role()


class SignerRefused(CAKeyError):
    """The signer answered, and refused; the text says why."""


def _not_running(path: str, exc: OSError) -> CAKeyError:
    detail = exc.strerror or type(exc).__name__
    return KeyUnavailableError(f"{SIGNER_NOT_RUNNING} ({path}: {detail})")


class _Connections(threading.local):
    sock: socket.socket | None = None
    path: str = ""


_connections = _Connections()


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(path)
    except OSError as exc:  # no socket file, nobody listening, no permission: not running for us
        sock.close()
        raise _not_running(path, exc) from None
    return sock


def _usable(sock: socket.socket) -> bool:
    """Whether an idle connection is still open: readable with nothing sent means the signer closed it."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _connection(path: str) -> socket.socket:
    sock = _connections.sock
    if sock is not None and (_connections.path != path or not _usable(sock)):
        sock.close()
        sock = None
    if sock is None:
        sock = _connect(path)
        _connections.sock, _connections.path = sock, path
    return sock


def _forget() -> None:
    if _connections.sock is not None:
        _connections.sock.close()
        _connections.sock = None


def close() -> None:
    """Close this thread's connection to the signer (tests; a worker that stops)."""
    _forget()


def exchange(*, path: str, message: dict[str, object]) -> protocol.Reply:
    """Send one request on this thread's connection and read the reply. Raises
    :class:`ca.pki.errors.KeyUnavailableError` when the signer cannot be reached (nothing was sent, so
    nothing was signed) or does not answer in time, and :class:`CAKeyError` when it breaks off after the
    request was sent (then nothing can be assumed unsigned; nothing is stored)."""
    sock = _connection(path)
    try:
        # a signer that refuses before reading (a uid it does not serve) has its reason waiting
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            protocol.write_frame(sock, message)
        payload = protocol.read_frame(sock, limit=protocol.MAX_REPLY)
        if payload is None:
            raise protocol.Closed("the signer closed the connection without answering")
        return protocol.parse_reply(payload)
    except TimeoutError:
        _forget()
        raise CAKeyError(
            f"The signer did not answer within {TIMEOUT:.0f} seconds, so nothing was stored. Ask the "
            "operator to look at the signer's log (journalctl -u enroll-signer), then try again."
        ) from None
    except (OSError, protocol.ProtocolError) as exc:
        _forget()  # sent, and no answer: the signer may have signed, so not "unavailable"
        detail = (exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else str(exc)
        raise CAKeyError(
            f"The signer broke off before it answered ({path}: {detail}), so nothing was stored. Ask the "
            "operator to look at the signer's log (journalctl -u enroll-signer), then try again."
        ) from None


def ping(*, path: str) -> None:
    """Raise :class:`CAKeyError` (:data:`SIGNER_NOT_RUNNING`) unless the signer answers."""
    reply = exchange(path=path, message=protocol.ping_message())
    if not reply.ok:
        raise SignerRefused(f"The signer refused this process: {reply.error}")


def _refused(reply: protocol.Reply, *, what: str) -> CAKeyError:
    kind = KeyUnavailableError if reply.unavailable else SignerRefused
    return kind(f"The signer refused to sign this {what}: {reply.error}")


class SignerBackend:
    """A CA key held by the signer process: ``sign`` sends the to-be-signed bytes and what they are;
    ``sign_many`` a batch of certificates in one message each :data:`protocol.MAX_BATCH`, which the signer
    checks with one query per kind and lints in parallel (so the web side lints nothing itself:
    ``lints_before_signing``)."""

    lints_before_signing = True

    def __init__(self, *, ca: CertificateAuthority, path: str) -> None:
        self._ca = ca
        self._path = path

    def public_key(self) -> CAPublicKey:
        key = self._ca.certificate.public_key()
        if not isinstance(key, CAPublicKey):
            raise CAKeyError(f"The certificate of CA '{self._ca.slug}' has a key type that cannot sign.")
        return key

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        message = protocol.sign_message(ca=self._ca.slug, purpose=purpose, algorithm=algorithm, data=data)
        reply = exchange(path=self._path, message=message)
        if not reply.ok or reply.signature is None:
            raise _refused(reply, what=purpose.value)
        return reply.signature

    def sign_many(
        self, *, items: Sequence[bytes], algorithm: SignatureHash, purpose: Purpose, lint: bool
    ) -> list[Signed]:
        """Per item, its signature or why the signer refused it (a lint refusal in lint's own words, as a
        local lint refusal reads); :class:`CAKeyError` when the signer cannot sign at all."""
        results: list[Signed] = []
        for start in range(0, len(items), protocol.MAX_BATCH):
            part = list(items[start : start + protocol.MAX_BATCH])
            message = protocol.sign_many_message(
                ca=self._ca.slug, purpose=purpose, algorithm=algorithm, items=part, lint=lint
            )
            try:
                reply = exchange(path=self._path, message=message)
                if not reply.ok or reply.results is None or len(reply.results) != len(part):
                    raise _refused(reply, what=f"batch of {len(part)} {purpose.value}s")
            except KeyUnavailableError as exc:
                if start:  # an earlier part was signed: the batch as a whole was not "signed by nobody"
                    raise CAKeyError(str(exc)) from None
                raise
            for result in reply.results:
                if isinstance(result, protocol.ItemRefused):
                    reason = (
                        result.reason if result.lint else f"The signer refused to sign it: {result.reason}"
                    )
                    results.append(reason)
                else:
                    results.append(result)
        return results


class SignerRaKey:
    """The RSA key of a CA's SCEP RA, held by the signer (:mod:`ca.signer.ra`): what
    :class:`ca.pki.scep.RsaKeyOperations` needs, RSA PKCS #1 v1.5 only. A ciphertext that does not decrypt
    raises ValueError as a local key does; a signer that cannot be asked raises :class:`CAKeyError`."""

    def __init__(self, *, ca: str, fingerprint: str, path: str) -> None:
        self._ca, self._fingerprint, self._path = ca, fingerprint, path

    def _ask(self, *, operation: str, data: bytes, hash_name: str = "") -> protocol.Reply:
        message = protocol.ra_message(
            operation=operation, ca=self._ca, ra=self._fingerprint, data=data, hash_name=hash_name
        )
        return exchange(path=self._path, message=message)

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if not isinstance(padding, PKCS1v15):
            raise ValueError("the SCEP RA key decrypts RSA PKCS #1 v1.5 only")
        reply = self._ask(operation="ra-decrypt", data=ciphertext)
        if reply.ok and reply.signature is not None:
            return reply.signature
        if reply.undecryptable:
            raise ValueError("the ciphertext does not decrypt with this RA key")
        raise _refused(reply, what="SCEP decryption")

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes:
        if not isinstance(padding, PKCS1v15):
            raise ValueError("the SCEP RA key signs RSA PKCS #1 v1.5 only")
        reply = self._ask(operation="ra-sign", data=data, hash_name=algorithm.name)
        if reply.ok and reply.signature is not None:
            return reply.signature
        raise _refused(reply, what="SCEP reply")


def signer_backend(ca: CertificateAuthority) -> SignerBackend | None:
    """The backend for ``ca`` when this process signs through the signer (``ENROLL_SIGNER_SOCKET``), else
    None (:func:`ca.services.keys.key_backend` then uses the key file or token itself)."""
    if role.signer or not settings.ENROLL_SIGNER_SOCKET:
        return None
    return SignerBackend(ca=ca, path=str(settings.ENROLL_SIGNER_SOCKET))
