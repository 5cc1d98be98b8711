"""``manage.py signer``: the one process that opens the CA keys, serving signatures on a Unix socket.

Callers are allowed by the socket's peer credentials (SO_PEERCRED): ``ENROLL_SIGNER_ALLOWED_UIDS``, or
the signer's own uid when that is empty; the socket file is 0660, so the file system lets in only the
signer's user and group besides. Each connection gets a thread and may carry many requests, one after the
other; every ``sign`` request is rate-limited per caller uid, re-checked (:mod:`ca.signer.checks`) and
signed with :func:`ca.services.keys.key_backend` (key file or token). Certificates and CRLs signed, and
every refusal, go into the audit log (OCSP responses into the process log only: they are many and say
nothing the database does not). The audit entries and the authorisations' ``used_at`` are written by one
writer thread right after the reply: the caller's transaction may hold the database's write lock while
it waits for the signature.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connections

from ca import audit
from ca.clock import utcnow
from ca.models import AuditEvent, CertificateAuthority
from ca.pki import lint, signing
from ca.pki.errors import CAKeyError, KeyUnavailableError
from ca.pki.signing import Purpose
from ca.services import keys
from ca.signer import checks, client, protocol, ra
from ca.signer.bookkeeping import Note, RateLimit, Writer
from ca.signer.tbs import public_key_of

logger = logging.getLogger(__name__)

#: Seconds a connection may stay idle between requests, and may take to send one whole request.
IDLE_TIMEOUT = 600.0
REQUEST_TIMEOUT = 60.0
#: Connections served at once; more are refused with a reason.
MAX_CONNECTIONS = 64
#: Seconds a CA row is reused before it is read again (a revoked CA stops issuing within this).
CA_FRESH_SECONDS = 5.0


class SignerStartError(Exception):
    """The signer cannot start; the text says why and what to do."""


def _peer_uid(sock: socket.socket) -> int:
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


class Signer:
    """The signer's state: the listening socket, the allowed uids, the rate limit, memory and writer."""

    def __init__(
        self, *, path: str, allowed_uids: list[int] | None = None, rate: float | None = None
    ) -> None:
        self.path = path
        self.allowed = set(allowed_uids or settings.ENROLL_SIGNER_ALLOWED_UIDS or [os.getuid()])
        self.limit = RateLimit(rate=float(rate or settings.ENROLL_SIGNER_RATE))
        self.memory = checks.Memory()
        self.writer = Writer()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.listener: socket.socket | None = None
        self._inode: int | None = None
        self._stopping = threading.Event()
        self._cas: dict[str, tuple[float, CertificateAuthority]] = {}
        self._cas_lock = threading.Lock()

    # --- the socket ---------------------------------------------------------------------------------

    def bind(self) -> None:
        """Create the socket file 0660 (no moment with wider permissions); refuse a path that is not a stale
        socket, and a socket another signer answers on."""
        path = Path(self.path)
        if not path.parent.is_dir():
            raise SignerStartError(f"The socket's folder {path.parent} does not exist; create it first.")
        with contextlib.suppress(FileNotFoundError):
            mode = path.lstat().st_mode
            if not stat.S_ISSOCK(mode):
                raise SignerStartError(f"{path} exists and is not a socket; move it away or choose another.")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # a stale socket of a signer that stopped
            else:
                raise SignerStartError(f"Another signer is listening on {path} already.")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # bind() creates the socket with 0o777 minus the umask: 0o660, so the signer's user and group
        # (the web workers) may connect, nobody else; there is no moment at which it is wider.
        old = os.umask(0o117)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        listener.listen(128)
        self.listener = listener
        self._inode = path.stat().st_ino

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; each is served on a thread of its own."""
        assert self.listener is not None
        if settings.ENROLL_LINT_BEFORE_SIGN:
            lint.warm_up()  # pkilint's validators now, not in the first request's time
        self.writer.start()
        logger.info("the signer listens on %s for uids %s", self.path, sorted(self.allowed))
        self.listener.settimeout(0.5)
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        self._close()

    def stop(self) -> None:
        self._stopping.set()

    def _close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        with contextlib.suppress(OSError):
            if Path(self.path).stat().st_ino == self._inode:
                Path(self.path).unlink()
        self.writer.stop()

    # --- one connection -----------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        client.role.signer = True
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                protocol.write_frame(conn, protocol.error_reply("the signer is busy; try again"))
            conn.close()
            return
        try:
            uid = _peer_uid(conn)
            if uid not in self.allowed:
                self._refuse(uid=uid, purpose="connection", ca="", reason=f"uid {uid} is not allowed")
                reply = protocol.error_reply(f"uid {uid} is not allowed to use the signer")
                protocol.write_frame(conn, reply)
                return
            while not self._stopping.is_set():
                conn.settimeout(IDLE_TIMEOUT)
                size = protocol.read_header(conn)
                if size is None:
                    return
                if size > protocol.MAX_FRAME:
                    reason = f"the message has {size} bytes, more than the {protocol.MAX_FRAME} allowed"
                    self._refuse(uid=uid, purpose="message", ca="", reason=reason)
                    protocol.write_frame(conn, protocol.error_reply(reason))
                    return  # the rest of the frame is never read: the connection ends
                conn.settimeout(REQUEST_TIMEOUT)
                payload = protocol.recv_exactly(conn, size)
                reply, keep = self._answer(uid, payload)
                protocol.write_frame(conn, reply)
                if not keep:
                    return
        except (OSError, protocol.Closed):
            pass  # the caller went away or stalled; nothing was signed for it on this request
        finally:
            conn.close()
            connections.close_all()
            self.slots.release()

    def _answer(self, uid: int, payload: bytes) -> tuple[dict[str, object], bool]:
        """The reply to one request, and whether the connection may carry another."""
        try:
            request = protocol.parse_request(payload)
        except protocol.ProtocolError as exc:
            self._refuse(uid=uid, purpose="message", ca="", reason=str(exc))
            return protocol.error_reply(str(exc)), False
        if isinstance(request, protocol.Ping):
            return protocol.ok_reply(), True
        if isinstance(request, protocol.SignManyRequest):
            return self._answer_many(uid, request), True
        if isinstance(request, protocol.RaRequest):
            return self._answer_ra(uid, request), True
        if not self.limit.allow(uid):
            reason = f"uid {uid} asked for more than {self.limit.rate:g} signatures a second; try again later"
            self._refuse(uid=uid, purpose=request.purpose.value, ca=request.ca, reason=reason)
            return protocol.error_reply(reason), True
        try:
            ca = self._ca(request.ca)
        except DatabaseError:
            logger.exception("the signer cannot read the database")
            connections.close_all()
            return protocol.error_reply("the signer cannot read the database; try again"), True
        if ca is None:
            reason = f"there is no CA '{request.ca}'"
            self._refuse(uid=uid, purpose=request.purpose.value, ca=request.ca, reason=reason)
            return protocol.error_reply(reason), True
        try:
            verdict = checks.check(
                ca=ca,
                purpose=request.purpose,
                data=request.data,
                algorithm=request.algorithm,
                memory=self.memory,
                now=utcnow(),
            )
            signature = keys.key_backend(ca).sign(
                data=request.data, algorithm=request.algorithm, purpose=request.purpose
            )
        except checks.Refused as exc:
            self._refuse(uid=uid, purpose=request.purpose.value, ca=ca.slug, reason=str(exc))
            return protocol.error_reply(str(exc)), True
        except CAKeyError as exc:
            logger.error("the signer cannot sign for CA %s: %s", ca.slug, exc)
            unavailable = isinstance(exc, KeyUnavailableError)
            return protocol.error_reply(str(exc), unavailable=unavailable), True
        except DatabaseError:
            logger.exception("the signer cannot read the database")
            connections.close_all()  # this thread reconnects on its next request
            return protocol.error_reply("the signer cannot read the database; try again"), True
        self._signed(uid=uid, ca=ca, purpose=request.purpose, verdict=verdict)
        return protocol.ok_reply(signature), True

    def _answer_ra(self, uid: int, request: protocol.RaRequest) -> dict[str, object]:
        """An operation with a CA's SCEP RA key (:mod:`ca.signer.ra`), rate-limited as signatures are."""
        if not self.limit.allow(uid):
            reason = f"uid {uid} asked for more than {self.limit.rate:g} signatures a second; try again later"
            self._refuse(uid=uid, purpose=request.operation, ca=request.ca, reason=reason)
            return protocol.error_reply(reason)
        try:
            return ra.answer(request)
        except checks.Refused as exc:
            self._refuse(uid=uid, purpose=request.operation, ca=request.ca, reason=str(exc))
            return protocol.error_reply(str(exc))
        except DatabaseError:
            logger.exception("the signer cannot read the database")
            connections.close_all()
            return protocol.error_reply("the signer cannot read the database; try again")

    def _answer_many(self, uid: int, request: protocol.SignManyRequest) -> dict[str, object]:
        """A batch of certificates: checked together (:func:`checks.check_certificates`), linted together,
        then each one left signed; per item its signature or why not. The key signing nothing at all
        (token gone, wrong PIN) refuses the whole batch as unavailable: the caller stores none of it."""
        purpose, count = request.purpose.value, len(request.items)
        if not self.limit.allow(uid, count):
            reason = f"uid {uid} asked for more than {self.limit.rate:g} signatures a second; try again later"
            self._refuse(uid=uid, purpose=f"batch of {count}", ca=request.ca, reason=reason)
            return protocol.error_reply(reason)
        signed: list[checks.Verdict] = []  # audited whatever happens next: the key did sign these
        ca: CertificateAuthority | None = None
        try:
            ca = self._ca(request.ca)
            if ca is None:
                reason = f"there is no CA '{request.ca}'"
                self._refuse(uid=uid, purpose=f"batch of {count}", ca=request.ca, reason=reason)
                return protocol.error_reply(reason)
            expected = signing.signature_hash(public_key=public_key_of(ca)).name
            if request.algorithm.name != expected:
                reason = f"CA '{ca.slug}' signs with {expected}, not {request.algorithm.name}"
                self._refuse(uid=uid, purpose=f"batch of {count}", ca=ca.slug, reason=reason)
                return protocol.error_reply(reason)
            verdicts = checks.check_certificates(
                ca=ca,
                items=request.items,
                algorithm=request.algorithm,
                memory=self.memory,
                now=utcnow(),
                lint=request.lint,
            )
            backend = keys.key_backend(ca)
            results: list[bytes | protocol.ItemRefused] = []
            for data, verdict in zip(request.items, verdicts, strict=True):
                if isinstance(verdict, checks.Refused):
                    lint = isinstance(verdict, checks.LintRefused)
                    self._refuse(
                        uid=uid,
                        purpose=purpose,
                        ca=ca.slug,
                        reason=f"lint: {verdict}" if lint else str(verdict),
                    )
                    results.append(protocol.ItemRefused(reason=str(verdict), lint=lint))
                    continue
                results.append(backend.sign(data=data, algorithm=request.algorithm, purpose=request.purpose))
                signed.append(verdict)
        except checks.Refused as exc:
            self._refuse(uid=uid, purpose=f"batch of {count}", ca=request.ca, reason=str(exc))
            return protocol.error_reply(str(exc))
        except CAKeyError as exc:
            logger.error("the signer cannot sign for CA %s: %s", request.ca, exc)
            unavailable = isinstance(exc, KeyUnavailableError) and not signed  # "nothing was signed"
            return protocol.error_reply(str(exc), unavailable=unavailable)
        except DatabaseError:
            logger.exception("the signer cannot read the database")
            connections.close_all()
            return protocol.error_reply("the signer cannot read the database; try again")
        finally:
            for verdict in signed:
                assert ca is not None
                self._signed(uid=uid, ca=ca, purpose=request.purpose, verdict=verdict)
        return protocol.many_reply(results)

    def _ca(self, slug: str) -> CertificateAuthority | None:
        """The CA row (with its parsed certificate), read again after :data:`CA_FRESH_SECONDS`."""
        now = time.monotonic()
        with self._cas_lock:
            cached = self._cas.get(slug)
        if cached is not None and now - cached[0] < CA_FRESH_SECONDS:
            return cached[1]
        ca = CertificateAuthority.objects.filter(slug=slug).first()
        if ca is not None:
            with self._cas_lock:
                self._cas[slug] = (now, ca)
        return ca

    def _signed(
        self, *, uid: int, ca: CertificateAuthority, purpose: Purpose, verdict: checks.Verdict
    ) -> None:
        if purpose is Purpose.OCSP_RESPONSE:
            logger.info("signed an %s of CA %s for uid %s", verdict.detail, ca.slug, uid)
            return
        item = audit.AuditItem(
            event=AuditEvent.SIGNER_SIGNED,
            ca_slug=ca.slug,
            serial=verdict.serial,
            crl_number=verdict.crl_number,
            detail=f"{verdict.detail}; for uid {uid}",
        )
        self.writer.notes.put(Note(item, verdict.authorisation))

    def _refuse(self, *, uid: int, purpose: str, ca: str, reason: str) -> None:
        logger.warning("the signer refused a %s of CA %s for uid %s: %s", purpose, ca or "-", uid, reason)
        item = audit.AuditItem(
            event=AuditEvent.SIGNER_REFUSED, ca_slug=ca, detail=f"{purpose} for uid {uid}: {reason}"
        )
        self.writer.notes.put(Note(item))
