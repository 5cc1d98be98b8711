"""enroll-crl-sync: keep a front server's CRL bundle current. No Django, no database.

    enroll-crl-sync --url URL [--url URL ...] --ca-file FILE --output FILE
                    [--reload-command CMD] [--node NAME] [--timeout SECONDS]

For each URL (one per CA of the chain: nginx and Apache need a CRL for every CA) it fetches the CRL with a
conditional GET, checks it (signature by a CA in --ca-file, RFC 5280 6.3.3 (f); nextUpdate in the future;
CRL number not lower than the installed one, RFC 5280 5.2.3), and writes one PEM bundle atomically
(temporary file, fsync, rename). The reload command runs only when the bundle changed; if it fails, the
previous bundle is put back. On any failure the installed file stays as it was and the exit status is 1,
with one line saying what went wrong. Safe to run every minute from cron or a systemd timer.

State between runs (ETags and the installed CRLs) lives in OUTPUT.state.json beside the bundle.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

USER_AGENT = "enroll-crl-sync/1"
MAX_CRL_BYTES = 64 * 1024 * 1024


class SyncError(Exception):
    """The sync cannot go on; the message is the one line the operator reads."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    crl: x509.CertificateRevocationList
    pem: str
    number: int
    etag: str | None
    changed: bool  # False when the server answered 304


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


def fetch(url: str, *, etag: str | None, node: str | None, timeout: float) -> tuple[bytes | None, str | None]:
    """GET the URL; (None, etag) on 304 Not Modified (only ever an answer to the ETag sent)."""
    if not url.startswith(("http://", "https://")):
        raise SyncError(f"{url}: only http:// and https:// URLs are supported")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/pkix-crl, application/x-pem-file"}
    if etag:
        headers["If-None-Match"] = etag
    if node:
        headers["X-Enroll-Node"] = node
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
        raise SyncError(f"{url}: cannot fetch the CRL ({reason})") from None


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


def sync(
    *,
    urls: Sequence[str],
    ca_file: Path,
    output: Path,
    reload_command: str | None = None,
    node: str | None = None,
    timeout: float = 15.0,
    reload_timeout: float = 120.0,
    now: dt.datetime | None = None,
) -> bool:
    """One sync run. Returns True if the bundle changed (and the reload ran). Raises SyncError."""
    now = now or _now()
    trusted = load_trusted(ca_file)
    state = _load_state(output)
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
        body, new_etag = fetch(url, etag=etag, node=node, timeout=timeout)
        if body is None:
            assert installed_pem is not None
            body, changed = installed_pem.encode(), False
        else:
            changed = True
        crl = parse_crl(body, url=url)
        number = check_crl(crl, url=url, trusted=trusted, installed_number=installed_number, now=now)
        pem = crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
        fetched.append(Fetched(url, crl, pem, number, new_etag, changed))

    bundle = "".join(item.pem for item in fetched).encode("ascii")
    try:
        current = output.read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise SyncError(f"cannot read {output}: {exc.strerror}") from None
    new_state = {item.url: {"etag": item.etag, "number": item.number, "pem": item.pem} for item in fetched}
    if current == bundle:
        write_atomically(_state_path(output), json.dumps(new_state, indent=1).encode())
        return False

    write_atomically(output, bundle)
    if reload_command:
        problem = _run_reload(reload_command, timeout=reload_timeout)
        if problem:
            if current is not None:
                write_atomically(output, current)
            else:
                output.unlink(missing_ok=True)
            raise SyncError(f"{problem}; the previous CRL file was put back")
    write_atomically(_state_path(output), json.dumps(new_state, indent=1).encode())
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="enroll-crl-sync", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--url", action="append", required=True, help="CRL URL (repeat for each CA of the chain)"
    )
    parser.add_argument(
        "--ca-file", required=True, type=Path, help="PEM bundle of the trusted CA certificates"
    )
    parser.add_argument("--output", required=True, type=Path, help="the PEM CRL bundle the server reads")
    parser.add_argument("--reload-command", help="run when the bundle changed, e.g. 'nginx -s reload'")
    parser.add_argument("--node", help="this server's name, reported to the portal")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default 15)")
    parser.add_argument(
        "--reload-timeout", type=float, default=120.0, help="seconds the reload may take (default 120)"
    )
    args = parser.parse_args(argv)
    try:
        changed = sync(
            urls=args.url,
            ca_file=args.ca_file,
            output=args.output,
            reload_command=args.reload_command,
            node=args.node,
            timeout=args.timeout,
            reload_timeout=args.reload_timeout,
        )
    except SyncError as exc:
        print(f"enroll-crl-sync: {exc}; {args.output} left unchanged", file=sys.stderr)
        return 1
    print(f"enroll-crl-sync: {'updated ' + str(args.output) if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
