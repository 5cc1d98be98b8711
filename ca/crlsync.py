"""enroll-crl-sync: keep a front server's CRL bundle current, and tell the portal. No Django, no database.

    enroll-crl-sync --url URL [--url URL ...] --ca-file FILE --output FILE [--reload-command CMD]
                    [--ca-bundle-url URL] [--node NAME --token-file FILE] [--report-url URL]
                    [--every SECONDS] [--heartbeat SECONDS] [--timeout SECONDS] [--reload-timeout SECONDS]

For each URL (one per CA of the chain: nginx and Apache need a CRL for every CA) it fetches the CRL with a
conditional GET (If-None-Match with the stored ETag, and ``Cache-Control: no-cache`` so that a cache in
between never answers with a stale CRL), checks it (signature by a CA in --ca-file, RFC 5280 6.3.3 (f);
nextUpdate in the future; CRL number not lower than the installed one, RFC 5280 5.2.3), and writes one PEM
bundle atomically (temporary file, fsync, rename). The reload command runs only when the bundle changed; if
it fails, the previous bundle is put back. If there was no previous bundle (the first run, e.g. before the
server was ever started), the verified new bundle stays: a server that is not running cannot be reloaded,
and it reads the bundle when it starts; the run still fails (exit status 1). On any other failure the
installed file stays as it was and the exit status is 1, with one line saying what went wrong.

Reports. With --node NAME --token-file FILE (the base64 Ed25519 key that ``manage.py frontserver add NAME``
printed), the sync POSTs a signed install report (:mod:`ca.pki.node_reports`) to --report-url (by default
the first --url with its last path segment replaced by ``report``): which CRL of each CA the server runs
after the run (authorityKeyIdentifier and CRL number), and whether the run installed a new bundle, found it
unchanged, or failed (with the reason). A report the portal refuses or that cannot be delivered is one
warning line; it never changes the installed files nor the exit status.

One-shot mode (no --every): one run, for cron or a systemd timer; it always reports (it is its own
heartbeat: --heartbeat, default 60 s, is then both the interval and the heartbeat of the report).

Service mode (--every SECONDS; systemd ``Type=simple``, ``Restart=always``): a run every SECONDS (±10 %
jitter); after a failure the wait doubles with each consecutive failure, up to max(60 s, 10 x SECONDS),
and is back to SECONDS after a success. It reports after each change and each failure, and at least every
--heartbeat seconds (default 10 x SECONDS) when nothing changed. SIGTERM or SIGINT ends it at once between
runs (a run in progress finishes first: files are never half-written), exit status 0. It prints one line
per change or failure (no timestamps: journald adds them), none per unchanged run.

CA rollover. With --ca-bundle-url (the portal's ``/pki/<slug>/bundle.pem``: every key generation of the CA
and of the CAs above it, and the link certificates between generations), the sync also keeps --ca-file: a
CA certificate from the download is added to it only when it chains to a CA the file trusts already
(signature, validity and basicConstraints cA=TRUE at each step), directly or through a link certificate
of the download (RFC 4210 section 4.4), never because a plain-HTTP download lists it; link certificates
are stepping stones only and are not added. The CRL of every generation the file trusts is then fetched
too (the bundle's ``# CRL: URL`` line before each certificate says where), and the reload runs when the CA
file or the CRL bundle changed. A certificate of the download that does not chain is ignored, with a
warning line.

State between runs (ETags and the installed CRLs) lives in OUTPUT.state.json beside the bundle.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ca.pki.node_reports import (
    CONTENT_TYPE,
    NODE_NAME,
    SIGNATURE_HEADER,
    InstalledCrl,
    Report,
    ReportError,
    ReportOutcome,
    key_from_token,
    new_nonce,
    sign_report,
)
from ca.pki.rollover import CRL_LINE, comment, is_link

USER_AGENT = "enroll-crl-sync/1"
MAX_CRL_BYTES = 64 * 1024 * 1024
MAX_SECONDS = 86_400  # the longest interval or heartbeat a report may carry
ONE_SHOT_HEARTBEAT = 60.0
JITTER = 0.10  # the wait between runs is SECONDS x uniform(1 - JITTER, 1 + JITTER)
BACKOFF_CAP_MINIMUM = 60.0
#: The state file's entry for the CA bundle (never a URL, so never a CRL's entry).
BUNDLE_STATE = "ca-bundle"


class SyncError(Exception):
    """The sync cannot go on; the message is the one line the operator reads."""


class InstallFailed(SyncError):
    """The bundle was written but the reload failed; the message says what happened to the file."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    crl: x509.CertificateRevocationList
    pem: str
    number: int
    authority_key_id: str
    etag: str | None
    changed: bool  # False when the server answered 304


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """What one run fetches, checks and installs."""

    urls: tuple[str, ...]
    ca_file: Path
    output: Path
    reload_command: str | None = None
    timeout: float = 15.0
    reload_timeout: float = 120.0
    ca_bundle_url: str | None = None


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """A certificate of the portal's CA bundle and the CRL URL its comment line gives (None for a link)."""

    certificate: x509.Certificate
    crl_url: str | None


@dataclass(frozen=True, slots=True)
class Reporter:
    """Where and as whom the sync reports: the node's name and key, the report URL, its announced rhythm."""

    node: str
    key: Ed25519PrivateKey
    url: str
    interval: float
    heartbeat: float
    timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run: what it did, the one-line error if it failed, and the CRLs the server runs afterwards."""

    outcome: ReportOutcome
    error: str
    crls: tuple[InstalledCrl, ...]


def _now() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


def load_trusted(path: Path) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise SyncError(f"cannot read the CA file {path}: {exc.strerror}") from None
    except ValueError:
        raise SyncError(f"{path} holds no PEM certificate") from None
    return certificates


def parse_crl(data: bytes, *, url: str) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise SyncError(f"{url}: the answer is not a complete CRL (truncated or not a CRL)") from None


def crl_number(crl: x509.CertificateRevocationList, *, url: str) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        raise SyncError(f"{url}: the CRL has no CRL number") from None
    except (ValueError, x509.DuplicateExtension):  # damaged, or an extension twice (RFC 5280 4.2)
        raise SyncError(f"{url}: the CRL's extensions are damaged or repeated") from None


def check_crl(
    crl: x509.CertificateRevocationList,
    *,
    url: str,
    trusted: Sequence[x509.Certificate],
    installed_number: int | None,
    now: dt.datetime,
) -> int:
    """Verify signature, freshness and number; return the CRL number."""
    try:  # the issuer name is read on first use: a damaged one raises ValueError here
        issuer = crl.issuer
        issuer_text = issuer.rfc4514_string()
    except ValueError:
        raise SyncError(f"{url}: the CRL's issuer name is damaged") from None
    issuers = [ca for ca in trusted if ca.subject == issuer]
    if not any(crl.is_signature_valid(ca.public_key()) for ca in issuers):  # type: ignore[arg-type]
        raise SyncError(f"{url}: the CRL is not signed by a CA in the CA file (issuer {issuer_text})")
    next_update = crl.next_update_utc
    if next_update is None or next_update <= now:
        raise SyncError(f"{url}: the CRL expired at {next_update} (nextUpdate); is the portal re-signing it?")
    number = crl_number(crl, url=url)
    if installed_number is not None and number < installed_number:
        raise SyncError(f"{url}: the CRL number {number} is lower than the installed {installed_number}")
    return number


def authority_key_id(
    crl: x509.CertificateRevocationList, *, url: str, trusted: Sequence[x509.Certificate]
) -> str:
    """The CRL's authorityKeyIdentifier (RFC 5280 5.2.1) as lower-case hex; for a CRL without one (not
    conforming, but seen), the subject key identifier of the CA whose key verifies it."""
    try:
        extension = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        extension = None
    except (ValueError, x509.DuplicateExtension):
        raise SyncError(f"{url}: the CRL's extensions are damaged or repeated") from None
    if extension is not None and extension.key_identifier:
        return extension.key_identifier.hex()
    for ca in trusted:
        if ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            try:
                return ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
            except x509.ExtensionNotFound:
                return x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest.hex()
    raise SyncError(f"{url}: the CRL names no authority key identifier")


def fetch(
    url: str, *, etag: str | None, timeout: float, what: str = "the CRL"
) -> tuple[bytes | None, str | None]:
    """GET the URL; (None, etag) on 304 Not Modified (only ever an answer to the ETag sent).

    ``Cache-Control: no-cache`` makes a cache between the portal and this server revalidate with the portal
    instead of answering with a copy it holds (RFC 9111 5.2.1.4).
    """
    if not url.startswith(("http://", "https://")):
        raise SyncError(f"{url}: only http:// and https:// URLs are supported")
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/pkix-crl, application/x-pem-file",
        "Cache-Control": "no-cache",
    }
    if etag:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (operator-given http(s) URL)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(MAX_CRL_BYTES + 1)
            if len(body) > MAX_CRL_BYTES:
                raise SyncError(f"{url}: the answer is larger than {MAX_CRL_BYTES} bytes")
            return body, response.headers.get("ETag")
    except urllib.error.HTTPError as exc:
        if exc.code == 304 and etag:
            return None, etag
        raise SyncError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    # OSError covers URLError, refused connections and timeouts; HTTPException a broken answer (bad status
    # line) or a bad port in the URL.
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SyncError(f"{url}: cannot fetch {what} ({reason})") from None


# --- the CA file: new key generations that chain to a trusted CA ------------------------------------------


def parse_ca_bundle(data: bytes, *, url: str) -> list[BundleEntry]:
    """The certificates of a CA bundle, each with the URL of the ``# CRL:`` line just before it."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SyncError(f"{url}: the CA bundle is not PEM text") from None
    entries: list[BundleEntry] = []
    crl_url: str | None = None
    block: list[str] | None = None
    for line in text.splitlines():
        if block is not None:
            block.append(line)
            if line.startswith("-----END CERTIFICATE-----"):
                try:
                    certificate = x509.load_pem_x509_certificate("\n".join(block).encode("ascii"))
                except ValueError:
                    raise SyncError(f"{url}: the CA bundle holds a damaged certificate") from None
                entries.append(BundleEntry(certificate, crl_url))
                block, crl_url = None, None
        elif line.startswith("-----BEGIN CERTIFICATE-----"):
            block = [line]
        elif line.startswith(CRL_LINE):
            found = line[len(CRL_LINE) :].strip()
            crl_url = found if found.startswith(("http://", "https://")) else None
    if block is not None:
        raise SyncError(f"{url}: the CA bundle is truncated (a certificate without its END line)")
    if not entries:
        raise SyncError(f"{url}: the CA bundle holds no certificate")
    return entries


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def _usable_ca(certificate: x509.Certificate, *, now: dt.datetime) -> bool:
    """A CA certificate (basicConstraints cA=TRUE; keyCertSign if it has keyUsage) valid at ``now``."""
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return False
    try:
        if not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return False
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except (ValueError, x509.DuplicateExtension):
        return False
    return bool(usage.key_cert_sign)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def admit_ca_certificates(
    candidates: Sequence[x509.Certificate], *, trusted: Sequence[x509.Certificate], now: dt.datetime
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(the candidates that chain to ``trusted``, the others). A candidate chains when it is a CA
    certificate valid now whose signature verifies with a CA certificate valid now that is trusted or that
    chains itself (a link certificate, then the new generation's own certificate through it)."""
    known = {_fingerprint(certificate) for certificate in trusted}
    signers = [certificate for certificate in trusted if _usable_ca(certificate, now=now)]
    pending: list[x509.Certificate] = []
    for certificate in candidates:
        if _fingerprint(certificate) not in known:
            known.add(_fingerprint(certificate))
            pending.append(certificate)
    admitted: list[x509.Certificate] = []
    progress = True
    while progress:
        progress = False
        for certificate in list(pending):
            if _usable_ca(certificate, now=now) and any(_issued_by(certificate, ca) for ca in signers):
                pending.remove(certificate)
                admitted.append(certificate)
                signers.append(certificate)
                progress = True
    return admitted, pending


def _describe(certificate: x509.Certificate) -> str:
    try:
        subject = certificate.subject.rfc4514_string()
    except ValueError:
        subject = "a damaged name"
    return comment(f"{subject} (serial {certificate.serial_number:X})")


@dataclass(frozen=True, slots=True)
class CaUpdate:
    """What the CA bundle adds this run: the new CA file (None: unchanged) and the one it replaces, the CAs
    then trusted, the CRL URLs of those CAs, and the state entry to keep."""

    ca_file: bytes | None
    previous_ca_file: bytes | None
    trusted: list[x509.Certificate]
    crl_urls: list[str]
    state: dict[str, object]


def update_cas(
    config: SyncConfig, *, trusted: list[x509.Certificate], state: dict[str, object], now: dt.datetime
) -> CaUpdate:
    """Fetch the CA bundle (conditional GET) and work out what the CA file gains (see the module's
    docstring); prints one warning line per certificate ignored in a newly fetched bundle."""
    url = config.ca_bundle_url
    assert url is not None
    previous = state.get(BUNDLE_STATE)
    previous = previous if isinstance(previous, dict) and previous.get("url") == url else {}
    stored, stored_etag = previous.get("pem"), previous.get("etag")
    etag = stored_etag if isinstance(stored_etag, str) and isinstance(stored, str) else None
    body, new_etag = fetch(url, etag=etag, timeout=config.timeout, what="the CA bundle")
    fresh = body is not None
    if body is None:
        assert isinstance(stored, str)
        body = stored.encode("ascii")
    entries = parse_ca_bundle(body, url=url)
    admitted, ignored = admit_ca_certificates(
        [entry.certificate for entry in entries], trusted=trusted, now=now
    )
    if fresh:
        for certificate in ignored:
            print(
                f"enroll-crl-sync: warning: {url}: ignored {_describe(certificate)}: it does not chain to a "
                f"CA in {config.ca_file}",
                file=sys.stderr,
            )
    added = [certificate for certificate in admitted if not is_link(certificate)]
    now_trusted = [*trusted, *added]
    trusted_prints = {_fingerprint(certificate) for certificate in now_trusted}
    crl_urls = [
        entry.crl_url
        for entry in entries
        if entry.crl_url and _fingerprint(entry.certificate) in trusted_prints
    ]
    new_file = previous = None
    if added:
        try:
            previous = current = config.ca_file.read_bytes()
        except OSError as exc:
            raise SyncError(f"cannot read the CA file {config.ca_file}: {exc.strerror}") from None
        if current and not current.endswith(b"\n"):
            current += b"\n"
        blocks = [
            f"# added by enroll-crl-sync on {now:%Y-%m-%d %H:%M} UTC from {url}: {_describe(certificate)},\n"
            "# it chains to a CA this file trusted\n"
            + certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for certificate in added
        ]
        new_file = current + "".join(blocks).encode("ascii")
    entry_state: dict[str, object] = {
        "url": url,
        "etag": new_etag,
        "pem": body.decode("ascii"),
        "crl_urls": crl_urls,
    }
    return CaUpdate(new_file, previous, now_trusted, crl_urls, entry_state)


def _all_urls(configured: Sequence[str], more: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for url in [*configured, *more]:
        if url not in seen:
            seen.append(url)
    return seen


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, rename, fsync the folder."""
    try:
        _write_atomically(path, data)
    except OSError as exc:
        raise SyncError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _state_path(output: Path) -> Path:
    return output.with_name(output.name + ".state.json")


def _load_state(output: Path) -> dict[str, object]:
    try:
        raw = json.loads(_state_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def installed_from_state(output: Path, urls: Sequence[str]) -> tuple[InstalledCrl, ...]:
    """The CRLs the server runs as the state file records them: what the last run that installed (or found
    current) a bundle left there. A failed run leaves the state as it was, except a first run whose reload
    failed: its bundle stays installed, and so does its state."""
    if not output.exists():
        return ()
    state = _load_state(output)
    bundle = state.get(BUNDLE_STATE)
    more = bundle.get("crl_urls") if isinstance(bundle, dict) else None
    if isinstance(more, list):
        urls = _all_urls(urls, [url for url in more if isinstance(url, str)])
    crls = []
    for url in urls:
        entry = state.get(url)
        if not isinstance(entry, dict):
            continue
        number, key_id, pem = entry.get("number"), entry.get("authority_key_id"), entry.get("pem")
        if isinstance(number, bool) or not isinstance(number, int):
            continue
        if not isinstance(key_id, str):  # a state file written before reports existed
            if not isinstance(pem, str):
                continue
            try:
                key_id = authority_key_id(x509.load_pem_x509_crl(pem.encode()), url=url, trusted=())
            except (ValueError, SyncError):
                continue
        crls.append(InstalledCrl(key_id, number))
    return tuple(crls)


def _run_reload(command: str, *, timeout: float) -> str | None:
    """Run the reload command; None if it succeeded, else what went wrong."""
    try:
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"the reload command did not finish within {timeout:g} s"
    except (OSError, ValueError) as exc:
        return f"the reload command could not be started ({exc})"
    if result.returncode == 0:
        return None
    detail = (result.stderr or result.stdout).strip().splitlines()
    return f"the reload command failed (exit {result.returncode}" + (f": {detail[-1]})" if detail else ")")


def _check_folder(output: Path) -> None:
    try:
        output.parent.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise SyncError(f"cannot write {output}: the folder {output.parent} does not exist") from None
    except OSError:
        pass  # the write says what is wrong


def sync_bundle(
    config: SyncConfig, *, now: dt.datetime | None = None
) -> tuple[bool, tuple[InstalledCrl, ...]]:
    """One sync run: (whether the bundle changed and the reload ran, the CRLs now installed).

    Raises SyncError when nothing was installed, InstallFailed when the reload failed after the write.
    """
    now = now or _now()
    output = config.output
    _check_folder(output)
    trusted = load_trusted(config.ca_file)
    state = _load_state(output)
    update = None
    urls = list(config.urls)
    if config.ca_bundle_url is not None:
        update = update_cas(config, trusted=trusted, state=state, now=now)
        trusted = update.trusted
        urls = _all_urls(urls, update.crl_urls)
    fetched: list[Fetched] = []
    for url in urls:
        previous = state.get(url)
        if not isinstance(previous, dict):  # no state yet for this URL, or a hand-edited file
            previous = {}
        pem_value, number_value, etag_value = (
            previous.get("pem"),
            previous.get("number"),
            previous.get("etag"),
        )
        installed_pem = pem_value if isinstance(pem_value, str) else None
        installed_number = number_value if isinstance(number_value, int) else None
        etag = etag_value if isinstance(etag_value, str) and installed_pem else None
        body, new_etag = fetch(url, etag=etag, timeout=config.timeout)
        if body is None:
            assert installed_pem is not None
            body, changed = installed_pem.encode(), False
        else:
            changed = True
        crl = parse_crl(body, url=url)
        number = check_crl(crl, url=url, trusted=trusted, installed_number=installed_number, now=now)
        key_id = authority_key_id(crl, url=url, trusted=trusted)
        pem = crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
        fetched.append(Fetched(url, crl, pem, number, key_id, new_etag, changed))

    bundle = "".join(item.pem for item in fetched).encode("ascii")
    try:
        current = output.read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise SyncError(f"cannot read {output}: {exc.strerror}") from None
    new_state: dict[str, object] = {
        item.url: {
            "etag": item.etag,
            "number": item.number,
            "authority_key_id": item.authority_key_id,
            "pem": item.pem,
        }
        for item in fetched
    }
    if update is not None:
        new_state[BUNDLE_STATE] = update.state
    installed = tuple(InstalledCrl(item.authority_key_id, item.number) for item in fetched)
    state_bytes = json.dumps(new_state, indent=1).encode()
    new_ca_file = update.ca_file if update is not None else None
    if current == bundle and new_ca_file is None:
        write_atomically(_state_path(output), state_bytes)
        return False, installed

    current_ca_file = None
    if new_ca_file is not None:
        assert update is not None
        current_ca_file = update.previous_ca_file
        write_atomically(config.ca_file, new_ca_file)
    if current != bundle:
        write_atomically(output, bundle)
    problem = (
        _run_reload(config.reload_command, timeout=config.reload_timeout) if config.reload_command else None
    )
    # as the CRL bundle: put back when there is a previous CRL bundle to put back (a first run keeps both
    # files for the server to read when it starts)
    if problem and current is not None and current_ca_file is not None:
        try:
            write_atomically(config.ca_file, current_ca_file)
        except SyncError as exc:
            problem += f"; putting the previous CA file back failed too ({exc})"
        else:
            problem += "; the previous CA file was put back"
    if problem and current is None:
        # Nothing to go back to, and a server that is not running cannot be reloaded: the verified bundle
        # stays for the server to read when it starts.
        write_atomically(_state_path(output), state_bytes)
        raise InstallFailed(
            f"{problem}; {output} was installed (there was no previous file) "
            "and is read when the server starts"
        )
    if problem:
        assert current is not None
        try:
            write_atomically(output, current)
        except SyncError as exc:
            raise InstallFailed(f"{problem}; putting the previous CRL file back failed too ({exc})") from None
        raise InstallFailed(f"{problem}; the previous CRL file was put back")
    write_atomically(_state_path(output), state_bytes)
    return True, installed


def sync(
    *,
    urls: Sequence[str],
    ca_file: Path,
    output: Path,
    reload_command: str | None = None,
    timeout: float = 15.0,
    reload_timeout: float = 120.0,
    now: dt.datetime | None = None,
) -> bool:
    """One sync run. Returns True if the bundle changed (and the reload ran). Raises SyncError."""
    config = SyncConfig(tuple(urls), ca_file, output, reload_command, timeout, reload_timeout)
    changed, _installed = sync_bundle(config, now=now)
    return changed


def run_once(config: SyncConfig, *, now: dt.datetime | None = None) -> RunResult:
    """One sync run as the report tells it; never raises SyncError."""
    try:
        changed, installed = sync_bundle(config, now=now)
    except InstallFailed as exc:  # the message says what happened to the file
        return RunResult(ReportOutcome.FAILED, str(exc), installed_from_state(config.output, config.urls))
    except SyncError as exc:
        error = f"{exc}; {config.output} left unchanged"
        return RunResult(ReportOutcome.FAILED, error, installed_from_state(config.output, config.urls))
    return RunResult(ReportOutcome.INSTALLED if changed else ReportOutcome.UNCHANGED, "", installed)


# --- reports -----------------------------------------------------------------------------------------


def default_report_url(crl_url: str) -> str:
    """The first CRL URL with its last path segment replaced by ``report`` (query and fragment dropped)."""
    parts = urllib.parse.urlsplit(crl_url)
    folder = parts.path.rpartition("/")[0]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"{folder}/report", "", ""))


def load_token(path: Path) -> Ed25519PrivateKey:
    """The node key from the token file; SyncError saying what is wrong with it."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise SyncError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SyncError(f"the token file {path} does not hold base64 text") from None
    try:
        return key_from_token(text)
    except ReportError as exc:
        raise SyncError(f"{exc} ({path})") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET (urllib, like browsers): answer with the 3xx instead."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> None:
        return None


_report_opener = urllib.request.build_opener(_NoRedirect)


def _portal_reason(exc: urllib.error.HTTPError) -> str:
    """The first line of the portal's plain-text answer, else the HTTP reason phrase."""
    try:
        text = exc.read(2048).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        text = ""
    lines = ["".join(c for c in line if c.isprintable()).strip() for line in text.splitlines()]
    reason = next((line for line in lines if line), "") or str(exc.reason)
    return reason[:200]


def send_report(reporter: Reporter, result: RunResult, *, timestamp: float | None = None) -> str | None:
    """POST the signed report of ``result``; None if the portal accepted it, else why not (one line)."""
    report = Report(
        node=reporter.node,
        timestamp=int(time.time() if timestamp is None else timestamp),
        nonce=new_nonce(),
        interval=reporter.interval,
        heartbeat=reporter.heartbeat,
        outcome=result.outcome,
        error=result.error,
        crls=result.crls,
    )
    body, signature = sign_report(report=report, key=reporter.key)
    request = urllib.request.Request(  # noqa: S310 (an http(s) URL, checked at start)
        reporter.url,
        data=body,
        method="POST",
        headers={"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: signature, "User-Agent": USER_AGENT},
    )
    try:
        with _report_opener.open(request, timeout=reporter.timeout) as response:
            response.read(4096)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            location = exc.headers.get("Location", "elsewhere")
            return f"HTTP {exc.code}: the portal redirects the report to {location}; give --report-url"
        return f"HTTP {exc.code}: {_portal_reason(exc)}"
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach {reporter.url} ({reason})"
    return None


def _report(reporter: Reporter, result: RunResult, *, one_shot: bool) -> None:
    problem = send_report(reporter, result)
    if problem is None:
        return
    if one_shot:
        consequence = "the CRL file and the exit status are not affected"
    else:
        consequence = (
            "the CRL file is not affected; the next report goes at the next change, failure or heartbeat"
        )
    print(
        f"enroll-crl-sync: warning: the portal did not take the report ({problem}); {consequence}",
        file=sys.stderr,
    )


def _say(result: RunResult, config: SyncConfig, *, one_shot: bool) -> None:
    if result.outcome is ReportOutcome.FAILED:
        print(f"enroll-crl-sync: {result.error}", file=sys.stderr)
    elif result.outcome is ReportOutcome.INSTALLED:
        numbers = ", ".join(str(crl.number) for crl in result.crls)
        noun = "CRL number" if len(result.crls) == 1 else "CRL numbers"
        print(f"enroll-crl-sync: updated {config.output} ({noun} {numbers})", flush=True)
    elif one_shot:
        print("enroll-crl-sync: up to date")


def run_one_shot(config: SyncConfig, *, reporter: Reporter | None = None) -> int:
    """One run (cron, a systemd timer); it always reports. The exit status: 0, or 1 if the run failed."""
    result = run_once(config)
    _say(result, config, one_shot=True)
    if reporter is not None:
        _report(reporter, result, one_shot=True)
    return 1 if result.outcome is ReportOutcome.FAILED else 0


# --- service mode ------------------------------------------------------------------------------------


def backoff_cap(every: float) -> float:
    return max(BACKOFF_CAP_MINIMUM, 10 * every)


def run_service(
    config: SyncConfig,
    *,
    every: float,
    stop: threading.Event,
    reporter: Reporter | None = None,
    wait: Callable[[float], object] | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run every ``every`` seconds (±10 % jitter) until ``stop`` is set; back off on failures.

    ``wait(seconds)`` waits between runs (by default ``stop.wait``: setting ``stop`` ends a wait at once);
    ``rng`` draws the jitter and ``clock`` times the heartbeat (injected by tests).
    """
    pause = wait if wait is not None else stop.wait
    draw = rng if rng is not None else random.SystemRandom()
    cap = backoff_cap(every)
    failures = 0
    last_report: float | None = None
    previous: ReportOutcome | None = None
    while not stop.is_set():
        result = run_once(config)
        failed = result.outcome is ReportOutcome.FAILED
        _say(result, config, one_shot=False)
        if previous is ReportOutcome.FAILED and result.outcome is ReportOutcome.UNCHANGED:
            print(f"enroll-crl-sync: {config.output} is up to date again", flush=True)
        failures = min(failures + 1, 64) if failed else 0
        delay = min(cap, every * 2**failures)
        if reporter is not None:
            now = clock()
            due = (
                last_report is None
                or result.outcome is not ReportOutcome.UNCHANGED
                or previous is ReportOutcome.FAILED
                # would the next run come later than the heartbeat allows?
                or now - last_report + delay * (1 + JITTER) >= reporter.heartbeat
            )
            if due:
                last_report = now  # also when undelivered: a refused report is not retried at each run
                _report(reporter, result, one_shot=False)
        previous = result.outcome
        if stop.is_set():
            break
        pause(delay * draw.uniform(1 - JITTER, 1 + JITTER))


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    """SIGTERM and SIGINT set ``stop``; returns the previous handlers.

    The handler sets the event from a fresh thread: setting it in the handler itself could deadlock when
    the signal lands while the main thread holds the event's lock (inside ``stop.wait``).
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=stop.set, name="enroll-crl-sync-stop", daemon=True).start()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


# --- command line ------------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 < value <= MAX_SECONDS:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_SECONDS} seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enroll-crl-sync", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--url", action="append", required=True, help="CRL URL (repeat for each CA of the chain)"
    )
    parser.add_argument(
        "--ca-file",
        required=True,
        type=Path,
        metavar="FILE",
        help="PEM bundle of the trusted CA certificates",
    )
    parser.add_argument(
        "--output", required=True, type=Path, metavar="FILE", help="the PEM CRL bundle the server reads"
    )
    parser.add_argument(
        "--reload-command", metavar="CMD", help="run when the bundle changed, e.g. 'nginx -s reload'"
    )
    parser.add_argument(
        "--ca-bundle-url",
        metavar="URL",
        help="the portal's CA bundle (/pki/SLUG/bundle.pem): a new key generation of a CA is added to "
        "--ca-file when it chains to a CA the file trusts, and its CRL is fetched too",
    )
    parser.add_argument(
        "--node",
        metavar="NAME",
        help="this server's name on the portal (manage.py frontserver add NAME); needs --token-file",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the node's key, as manage.py frontserver add printed it (base64)",
    )
    parser.add_argument(
        "--report-url",
        metavar="URL",
        help="where the signed install reports go (default: the first --url with its last path segment "
        "replaced by 'report')",
    )
    parser.add_argument(
        "--every",
        type=_seconds,
        metavar="SECONDS",
        help="service mode: run every SECONDS until SIGTERM (default: one run, then exit)",
    )
    parser.add_argument(
        "--heartbeat",
        type=_seconds,
        metavar="SECONDS",
        help="report at least this often when nothing changed (default: 10 x --every; one run: 60)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=15.0, metavar="S", help="seconds per request (default 15)"
    )
    parser.add_argument(
        "--reload-timeout",
        type=_seconds,
        default=120.0,
        metavar="S",
        help="seconds the reload may take (default 120)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.node is not None and args.token_file is None:
        parser.error("--node needs --token-file (the key manage.py frontserver add printed for this node)")
    if args.token_file is not None and args.node is None:
        parser.error("--token-file needs --node (the name this server has on the portal)")
    if args.report_url is not None and args.node is None:
        parser.error("--report-url needs --node and --token-file")
    if args.node is not None and not NODE_NAME.fullmatch(args.node):
        parser.error(f"--node: '{args.node}' is not a front server name (letters, digits, '.', '_', '-')")
    report_url = args.report_url or default_report_url(args.url[0])
    if args.node is not None and not report_url.startswith(("http://", "https://")):
        parser.error(f"--report-url: '{report_url}' is not an http:// or https:// URL")
    if args.ca_bundle_url is not None and not args.ca_bundle_url.startswith(("http://", "https://")):
        parser.error(f"--ca-bundle-url: '{args.ca_bundle_url}' is not an http:// or https:// URL")
    if args.every is not None and args.heartbeat is not None and args.heartbeat < args.every:
        parser.error("--heartbeat must not be shorter than --every (a report can only follow a run)")

    config = SyncConfig(
        urls=tuple(args.url),
        ca_file=args.ca_file,
        output=args.output,
        reload_command=args.reload_command,
        timeout=args.timeout,
        reload_timeout=args.reload_timeout,
        ca_bundle_url=args.ca_bundle_url,
    )
    reporter = None
    if args.node is not None:
        try:
            key = load_token(args.token_file)
        except SyncError as exc:
            print(f"enroll-crl-sync: {exc}", file=sys.stderr)
            return 2
        if args.every is None:
            heartbeat = args.heartbeat or ONE_SHOT_HEARTBEAT
            interval = heartbeat
        else:
            heartbeat = args.heartbeat or min(float(MAX_SECONDS), 10 * args.every)
            interval = args.every
        reporter = Reporter(args.node, key, report_url, interval, heartbeat, args.timeout)

    if args.every is None:
        return run_one_shot(config, reporter=reporter)

    stop = threading.Event()
    previous = _stop_on_signals(stop)
    via = f", reporting as {reporter.node} to {reporter.url}" if reporter else ""
    print(f"enroll-crl-sync: keeping {config.output} current, every {args.every:g} s{via}", flush=True)
    try:
        run_service(config, every=args.every, stop=stop, reporter=reporter)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    print("enroll-crl-sync: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
