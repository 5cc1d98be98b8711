"""What the signer's checks share: the refusal, what the signer remembers, the verdict, and reading a
to-be-signed value (wrapped into a whole Certificate or CertificateList to load it)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography import x509

from ca.models import CertificateAuthority
from ca.pki import signing

_E = TypeVar("_E", bound=x509.ExtensionType)

#: How far the web side's clock (and a long batch) may be from the signer's.
CLOCK_SLACK = dt.timedelta(minutes=10)


class Refused(Exception):
    """The signer will not sign this; the text says why."""


@dataclass(slots=True)
class Memory:
    """What this signer process signed (the database learns it a moment later, from its writer)."""

    serials: set[tuple[int, str]] = field(default_factory=set)
    crl_numbers: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What was checked: for the audit entry and for what the writer notes afterwards."""

    serial: str = ""
    crl_number: int | None = None
    authorisation: int | None = None
    detail: str = ""


def wrap(tbs: bytes, *, algorithm_der: bytes, signature: bytes) -> bytes:
    """SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }: a Certificate or CertificateList."""
    return signing._tlv(0x30, tbs + algorithm_der + signing._tlv(0x03, b"\x00" + signature))


def public_key_of(ca: CertificateAuthority) -> signing.CAPublicKey:
    key = ca.certificate.public_key()
    if not isinstance(key, signing.CAPublicKey):
        raise Refused(f"CA '{ca.slug}' has a key that cannot sign")
    return key


def throwaway_signature(*, ca: CertificateAuthority, data: bytes, algorithm: signing.SignatureHash) -> bytes:
    """A signature of the CA key's type over ``data`` by a throwaway key: what lint reads in its place."""
    backend = signing.PrivateKeyBackend(key=signing.throwaway_key(like=public_key_of(ca)))
    return backend.sign(data=data, algorithm=algorithm, purpose=signing.Purpose.CERTIFICATE)


def same_issuer(
    *, ca: CertificateAuthority, issuer: x509.Name, aki: x509.AuthorityKeyIdentifier | None
) -> None:
    if issuer.public_bytes() != ca.certificate.subject.public_bytes():
        raise Refused(f"its issuer is '{issuer.rfc4514_string()}', not CA '{ca.slug}'")
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key_of(ca)).digest
    if aki is not None and aki.key_identifier not in (None, ski):
        raise Refused(f"its authority key identifier is not the key of CA '{ca.slug}'")


def extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
