"""The CA's private keys: where each key file is, loading it (decrypted once per process and file version).

Everything that signs loads the CA key through this module, which reads files only through
:mod:`ca.pki.keys`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from django.conf import settings

from ca.models import (
    CertificateAuthority,
)
from ca.pki import keys as pki_keys
from ca.pki import signing as pki_signing
from ca.pki.errors import CAKeyError

logger = logging.getLogger(__name__)


_key_cache: dict[tuple[int, str, int], pki_keys.CAPrivateKey] = {}
_key_cache_lock = threading.Lock()


def key_path(ca: CertificateAuthority) -> Path:
    return Path(settings.ENROLL_CA_KEY_DIR) / ca.key_file


def load_key(ca: CertificateAuthority) -> pki_keys.CAPrivateKey:
    """The CA's private key, decrypted once per process and file version."""
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


def key_backend(ca: CertificateAuthority) -> pki_signing.KeyBackend:
    """What signs for ``ca`` (:mod:`ca.pki.signing`): today its decrypted key file."""
    return pki_signing.PrivateKeyBackend(key=load_key(ca))


def clear_key_cache() -> None:
    with _key_cache_lock:
        _key_cache.clear()


# --- creating and importing CAs --------------------------------------------------------------------
