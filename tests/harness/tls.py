"""TLS for the test servers and their clients: a throwaway server CA and server certificate for 127.0.0.1
(:func:`make_server_certificate`), and a plain TLS client (:func:`https_get`, Python's ssl module) that
presents a client certificate or none and tells an HTTP answer from a refusal in the handshake."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.pki import profiles
from tests.harness.process import write_file


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """Files of a throwaway server CA and a server certificate for 127.0.0.1 (IP SAN) it signed."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (the form the test servers and clients read)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_server_certificate(folder: Path, *, host: str = "127.0.0.1") -> ServerCertificate:
    """Make a server CA and a TLS server certificate for ``host`` (an IP address) under ``folder``.

    Only for the server side of a test: clients either trust ``ca_path`` or ignore HTTPS errors. The CA
    is a root from the portal's own PKI core (:func:`ca.pki.profiles.build_ca_certificate`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    backdated = now - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = profiles.build_ca_name(common_name="Throwaway test server CA", organization=None)
    ca_cert = profiles.build_ca_certificate(
        subject=ca_name,
        key=ca_key,
        serial=x509.random_serial_number(),
        not_before=backdated,
        not_after=now + dt.timedelta(days=2),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(backdated)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServerCertificate(
        ca_path=write_file(folder / "server-ca.pem", ca_cert.public_bytes(pem)),
        cert_path=write_file(folder / "server.pem", cert.public_bytes(pem)),
        key_path=write_file(folder / "server.key", key_pem(key), mode=0o600),
    )


@dataclass(frozen=True, slots=True)
class HttpsAnswer:
    """What a TLS client got: an HTTP status and body, or (``status`` None) the TLS/connection error."""

    status: int | None
    text: str

    @property
    def refused_in_tls(self) -> bool:
        """The server ended the connection during or right after the handshake (no HTTP answer)."""
        return self.status is None


def https_get(
    url: str,
    *,
    server_ca: Path,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    timeout: float = 10.0,
) -> HttpsAnswer:
    """GET ``url`` on a fresh connection (no session reuse), presenting ``cert_path``/``key_path`` if given.

    The server's certificate is verified against ``server_ca`` (a failure there raises: it is the test's
    mistake, not a refusal). A server that refuses the client certificate either answers over HTTP (nginx:
    400) or ends the connection: with TLS 1.3 the client's handshake is complete before the server has
    checked the certificate, so the refusal shows up as an alert or a reset on the first read. Both are
    returned as ``HttpsAnswer(None, reason)``.
    """
    context = ssl.create_default_context(cafile=str(server_ca))
    if cert_path is not None:
        context.load_cert_chain(str(cert_path), str(key_path) if key_path is not None else None)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url}")
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/", headers={"Connection": "close"})
        response = connection.getresponse()
        return HttpsAnswer(response.status, response.read().decode("utf-8", errors="replace"))
    except ssl.SSLCertVerificationError:
        raise
    except ssl.SSLError as exc:
        return HttpsAnswer(None, f"{type(exc).__name__}: {exc.reason or exc}")
    except ConnectionError as exc:  # reset, aborted, broken pipe, http.client.RemoteDisconnected
        return HttpsAnswer(None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
