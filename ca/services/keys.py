"""The CA's private keys: where each key is, and what signs with it (:func:`key_backend`).

A CA's key lives either in an encrypted file in the CA key folder (decrypted once per process and file
version, read only through :mod:`ca.pki.keys`), or in a PKCS#11 token (:mod:`ca.pki.pkcs11`): then the
CA's ``key_file`` holds the key's RFC 7512 URI and the token's user PIN comes from the file named by
``ENROLL_PKCS11_PIN_FILE`` or from the environment's ``ENROLL_PKCS11_PIN``, never from the database.
Everything that signs asks :func:`key_backend`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings

from ca.models import (
    CertificateAuthority,
)
from ca.pki import keys as pki_keys
from ca.pki import pkcs11 as pki_pkcs11
from ca.pki import signing as pki_signing
from ca.pki.errors import CAKeyError, KeyUnavailableError
from ca.signer import client as signer_client

logger = logging.getLogger(__name__)


_key_cache: dict[tuple[int, str, int], pki_keys.CAPrivateKey] = {}
_key_cache_lock = threading.Lock()


def key_path(ca: CertificateAuthority) -> Path:
    return Path(settings.ENROLL_CA_KEY_DIR) / ca.key_file


def load_key(ca: CertificateAuthority) -> pki_keys.CAPrivateKey:
    """The CA's private key, decrypted once per process and file version (a key file only: a key in a
    token never leaves it, so callers that can sign through any backend use :func:`key_backend`)."""
    if ca.key_in_token:
        raise CAKeyError(
            f"The key of CA '{ca.slug}' is in a PKCS#11 token and cannot be read out; this operation "
            "needs a CA whose key is a file."
        )
    path = key_path(ca)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        logger.error("the key file of CA %s (%s) cannot be read: %s", ca.slug, path, exc.strerror)
        raise CAKeyError(
            f"The key of CA '{ca.slug}' cannot be read ({exc.strerror}); "
            "the operator must restore its key file."
        ) from None
    cache_key = (ca.pk, ca.key_file, mtime)
    with _key_cache_lock:
        cached = _key_cache.get(cache_key)
    if cached is not None:
        return cached
    key = pki_keys.load_ca_key(
        path=path, passphrase=settings.ENROLL_CA_PASSPHRASE, certificate=ca.certificate
    )
    with _key_cache_lock:
        _key_cache[cache_key] = key
    return key


_token_backends: dict[tuple[int, str], pki_pkcs11.Pkcs11KeyBackend] = {}


def token_pin() -> str:
    """The PKCS#11 user PIN: the content of the file ``ENROLL_PKCS11_PIN_FILE`` names (without its
    trailing newline), else the environment's ``ENROLL_PKCS11_PIN``."""
    path = settings.ENROLL_PKCS11_PIN_FILE
    if path:
        return read_pin_file(Path(path))
    pin = os.environ.get("ENROLL_PKCS11_PIN", "")
    if not pin:
        raise KeyUnavailableError(
            "The CA key is in a PKCS#11 token but no PIN is configured: set ENROLL_PKCS11_PIN_FILE to a "
            "file that holds the token's user PIN (or ENROLL_PKCS11_PIN)."
        )
    return pin


def read_pin_file(path: Path) -> str:
    """A PIN file's content, without its trailing newline."""
    try:
        pin = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KeyUnavailableError(f"The PIN file {path} cannot be read ({reason}).") from None
    if not pin:
        raise KeyUnavailableError(f"The PIN file {path} is empty; it must hold the token's user PIN.")
    return pin


def token_key(ca: CertificateAuthority) -> pki_pkcs11.TokenKey:
    """Where the token key of ``ca`` is (its ``key_file`` is an RFC 7512 URI)."""
    try:
        return pki_pkcs11.TokenKey.parse(ca.key_file)
    except pki_pkcs11.UriError as exc:
        raise CAKeyError(f"The key location of CA '{ca.slug}' is not usable: {exc}") from None


def remember_token_backend(ca: CertificateAuthority, backend: pki_pkcs11.Pkcs11KeyBackend) -> None:
    """Use ``backend`` (opened with a PIN a command was given) for ``ca`` in this process."""
    with _key_cache_lock:
        _token_backends[(ca.pk, ca.key_file)] = backend


def key_backend(ca: CertificateAuthority) -> pki_signing.KeyBackend:
    """What signs for ``ca`` (:mod:`ca.pki.signing`): its key in a PKCS#11 token, or its decrypted key
    file; kept per process. A token backend carries the CA certificate's public key, so a token that
    holds another key is caught by the signature check before anything is stored. With
    ``ENROLL_SIGNER_SOCKET`` set, the signer process's backend (:mod:`ca.signer`): this process then
    opens no key, and needs neither passphrase nor PIN."""
    if (remote := signer_client.signer_backend(ca)) is not None:
        return remote
    if not ca.key_in_token:
        return pki_signing.PrivateKeyBackend(key=load_key(ca))
    cache_key = (ca.pk, ca.key_file)
    with _key_cache_lock:
        cached = _token_backends.get(cache_key)
    if cached is not None:
        return cached
    public_key = ca.certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CAKeyError(f"The certificate of CA '{ca.slug}' has a key that is neither RSA nor ECDSA.")
    backend = pki_pkcs11.Pkcs11KeyBackend(where=token_key(ca), pin=token_pin(), public_key=public_key)
    remember_token_backend(ca, backend)
    return backend


def clear_file_key(ca: CertificateAuthority) -> None:
    """Forget the decrypted key file of ``ca`` in this process (after its key moved into a token)."""
    with _key_cache_lock:
        for cache_key in [cache_key for cache_key in _key_cache if cache_key[0] == ca.pk]:
            del _key_cache[cache_key]


def clear_key_cache() -> None:
    with _key_cache_lock:
        _key_cache.clear()
        _token_backends.clear()
