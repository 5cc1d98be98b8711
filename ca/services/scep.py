"""SCEP on the CA side (RFC 8894): which key decrypts requests and signs replies, the RA certificate, and
the answers to GetCACaps, GetCACert and PKIOperation's CMS (the wire formats are :mod:`ca.pki.scep`).

A CA with an RSA key file decrypts and signs SCEP messages itself (GetCACert answers its certificate
alone). An EC key cannot decrypt RSA key transport, and a key in a PKCS#11 token only signs (it is made
for signing, and the portal decrypts nothing with it), so an EC CA and a CA whose key is in a token get a
registration authority: an RSA key and a certificate the CA issues through its key backend
(:func:`ca.pki.scep.ra_certificate_builder`, keyUsage digitalSignature and
keyEncipherment, extendedKeyUsage id-kp-cmcRA), made on first use or by ``manage.py scep_ra``, its key
stored encrypted in the CA key folder as CA keys are (:mod:`ca.pki.keys`). GetCACert then answers the RA
and the CA chain as a certs-only PKCS #7 (application/x-x509-ca-ra-cert, RFC 8894 section 4.2.1.2).
A new RA is made when the current one has less than :data:`RA_RENEW_BEFORE` left.

With the signer (``ENROLL_SIGNER_SOCKET``), every CA uses an RA (an RSA key-file CA too: its key stays in
the signer, which never decrypts or signs raw bytes with a CA key), and the RA key's two operations go
through the signer (:class:`ca.signer.client.SignerRaKey`, :mod:`ca.signer.ra`): a web worker never opens
the RA key file nor knows the passphrase that encrypts it. A web worker then never makes an RA either:
the operator makes it with ``manage.py scep_ra`` run as the signer's user (which opens the CA key itself,
as the signer does); until then SCEP answers 503 with what to do.

The enrollment itself (codes, approval, issuance) is :mod:`enroll.flows.devices`; the view
(:mod:`enroll.scep_views`) joins the two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import transaction

from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import Certificate, CertificateAuthority, ScepRaCertificate
from ca.pki import keys as pki_keys
from ca.pki import scep
from ca.pki.serials import format_serial
from ca.pki.signing import sign_certificate
from ca.services import keys, reservations
from ca.signer import client as signer_client

logger = logging.getLogger(__name__)

#: How long an RA certificate is made for (capped at its CA's notAfter), and when a new one is made.
RA_VALIDITY = dt.timedelta(days=730)
RA_RENEW_BEFORE = dt.timedelta(days=30)
#: RSA-3072, as the portal's smallest RSA CA key.
RA_KEY_SIZE = 3072

CA_CERT = "application/x-x509-ca-cert"
CA_RA_CERT = "application/x-x509-ca-ra-cert"
PKI_MESSAGE = "application/x-pki-message"

_ra_lock = threading.Lock()
_ra_key_cache: dict[tuple[int, str, int], rsa.RSAPrivateKey] = {}


@dataclass(frozen=True, slots=True)
class ScepIdentity:
    """The certificate and RSA key that decrypt a CA's SCEP requests and sign its replies."""

    ca: CertificateAuthority
    certificate_der: bytes
    key: scep.RsaKeyOperations  # in this process, or the RA key in the signer
    ra: ScepRaCertificate | None  # None: the CA's own key


def _ra_key_path(ra: ScepRaCertificate) -> Path:
    return Path(settings.ENROLL_CA_KEY_DIR) / ra.key_file


def ra_only() -> bool:
    """Whether every CA answers SCEP through an RA: with the signer configured, no CA key decrypts."""
    return bool(settings.ENROLL_SIGNER_SOCKET)


def through_signer() -> bool:
    """Whether this process asks the signer for the RA key's operations (a web worker with the socket set;
    not the signer itself, nor ``manage.py scep_ra`` run as the signer's user)."""
    return ra_only() and not signer_client.role.signer


def ra_key(ra: ScepRaCertificate) -> scep.RsaKeyOperations:
    """What decrypts and signs as ``ra``: the signer (:func:`through_signer`), else its key file."""
    if through_signer():
        return signer_client.SignerRaKey(
            ca=ra.ca.slug, fingerprint=ra.fingerprint_sha256, path=str(settings.ENROLL_SIGNER_SOCKET)
        )
    return ra_private_key(ra)


def ra_private_key(ra: ScepRaCertificate) -> rsa.RSAPrivateKey:
    """The RA's key, decrypted from its file with the CA passphrase (the signer, or a process that holds
    the keys itself); raises :class:`CAError` when it cannot be read."""
    try:
        return _load_ra_key(ra)
    except OSError as exc:
        raise CAError(
            f"The SCEP RA key of CA '{ra.ca.slug}' cannot be read ({exc.strerror}); the operator must "
            "restore it or make a new RA (manage.py scep_ra --new)."
        ) from None


def _load_ra_key(ra: ScepRaCertificate) -> rsa.RSAPrivateKey:
    path = _ra_key_path(ra)
    cache_key = (ra.pk, ra.key_file, path.stat().st_mtime_ns)
    cached = _ra_key_cache.get(cache_key)
    if cached is not None:
        return cached
    with from_core():
        key = pki_keys.load_ca_key(
            path=path, passphrase=settings.ENROLL_CA_PASSPHRASE, certificate=ra.certificate
        )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("an SCEP RA key is RSA")
    _ra_key_cache[cache_key] = key
    return key


def current_ra(*, ca: CertificateAuthority, now: dt.datetime) -> ScepRaCertificate | None:
    """The newest RA certificate of ``ca`` that is valid for at least :data:`RA_RENEW_BEFORE` more."""
    return (
        ScepRaCertificate.objects.filter(ca=ca, not_before__lte=now, not_after__gt=now + RA_RENEW_BEFORE)
        .order_by("-created_at")
        .first()
    )


def create_ra(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> ScepRaCertificate:
    """Issue a new RSA RA certificate for ``ca`` (its serial reserved first, as every serial is) and store
    its key encrypted beside the CA keys."""
    now = now or utcnow()
    with from_core():
        backend = keys.key_backend(ca)
    ra_key = rsa.generate_private_key(public_exponent=65537, key_size=RA_KEY_SIZE)
    not_before = (now - dt.timedelta(minutes=5)).replace(microsecond=0)
    not_after = min(now + RA_VALIDITY, ca.not_after).replace(microsecond=0)
    [reservation] = reservations.reserve(
        ca=ca, purposes=[f"SCEP RA certificate of {ca.slug}"], not_after=not_after, now=now
    )
    subject = x509.Name(
        [
            *[attr for attr in ca.certificate.subject if attr.oid == NameOID.ORGANIZATION_NAME],
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ca.name} SCEP RA"[:64]),
        ]
    )
    builder = scep.ra_certificate_builder(
        ra_public_key=ra_key.public_key(),
        subject=subject,
        issuer=ca.certificate,
        serial=int(reservation.serial, 16),
        not_before=not_before,
        not_after=not_after,
        urls=ca.urls,
    )
    with from_core():
        certificate = sign_certificate(builder=builder, backend=backend)
    key_file = f"{ca.slug}-scep-ra-{secrets.token_hex(4)}.key.pem"
    with from_core():
        pki_keys.save_ca_key(
            key=ra_key,
            path=Path(settings.ENROLL_CA_KEY_DIR) / key_file,
            passphrase=settings.ENROLL_CA_PASSPHRASE,
        )
    der = certificate.public_bytes(serialization.Encoding.DER)
    with transaction.atomic():
        ra = ScepRaCertificate.objects.create(
            ca=ca,
            certificate_der=der,
            key_file=key_file,
            serial=format_serial(serial=certificate.serial_number),
            subject=certificate.subject.rfc4514_string(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            created_at=now,
        )
        reservations.mark_issued(reservations=[reservation], now=now)
    logger.info("SCEP RA certificate %s made for CA %s", ra.serial, ca.slug)
    return ra


def identity_for(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> ScepIdentity:
    """Who decrypts and signs SCEP for ``ca``: the CA itself when its key is an RSA key file (and no signer
    is configured), else its current RA (made now if there is none, or if the current one is about to
    expire; through the signer, never made here: see the module's text)."""
    now = now or utcnow()
    if not ra_only() and not ca.key_in_token and isinstance(ca.certificate.public_key(), rsa.RSAPublicKey):
        ca_key = keys.load_key(ca)
        if isinstance(ca_key, rsa.RSAPrivateKey):
            return ScepIdentity(ca=ca, certificate_der=bytes(ca.certificate_der), key=ca_key, ra=None)
    with _ra_lock:
        ra = current_ra(ca=ca, now=now)
        if ra is None and through_signer():
            ra = _any_unexpired_ra(ca=ca, now=now)
        elif ra is None:
            ra = create_ra(ca=ca, now=now)
    return ScepIdentity(ca=ca, certificate_der=bytes(ra.certificate_der), key=ra_key(ra), ra=ra)


#: The RAs whose coming expiry this process has logged already.
_warned_ras: set[int] = set()


def _any_unexpired_ra(*, ca: CertificateAuthority, now: dt.datetime) -> ScepRaCertificate:
    """Through the signer: the newest RA still valid (a web worker makes none), else :class:`CAError`."""
    ra = (
        ScepRaCertificate.objects.filter(ca=ca, not_before__lte=now, not_after__gt=now)
        .order_by("-created_at")
        .first()
    )
    if ra is None:
        raise CAError(
            f"CA '{ca.slug}' has no SCEP RA certificate, and with the signer the web side makes none: the "
            f"operator runs 'manage.py scep_ra --ca {ca.slug}' as the signer's user."
        )
    if ra.pk in _warned_ras:  # once per RA and process, not on every SCEP request
        return ra
    _warned_ras.add(ra.pk)
    logger.warning(
        "the SCEP RA of CA %s expires on %s: the operator should run 'manage.py scep_ra --ca %s --new' as "
        "the signer's user",
        ca.slug,
        f"{ra.not_after:%Y-%m-%d}",
        ca.slug,
    )
    return ra


def capabilities() -> str:
    """GetCACaps (RFC 8894 section 3.5.2): one capability a line."""
    return "\n".join(scep.CA_CAPABILITIES) + "\n"


def ca_certificates(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> tuple[bytes, str]:
    """GetCACert (RFC 8894 section 4.2.1): the CA's certificate alone (DER) when it decrypts itself, else
    a certs-only PKCS #7 with the RA certificate first, then the CA and its parents; with its media type."""
    identity = identity_for(ca=ca, now=now)
    if identity.ra is None:
        return bytes(ca.certificate_der), CA_CERT
    chain = [identity.certificate_der, *(bytes(node.certificate_der) for node in ca.chain())]
    return scep.certs_only(certificates=chain), CA_RA_CERT


def open_message(
    *, identity: ScepIdentity, data: bytes, now: dt.datetime | None = None
) -> tuple[scep.PkiMessage, ScepIdentity]:
    """A client's pkiMessage verified and decrypted, and the identity that decrypted it (which signs the
    reply); raises :class:`ca.pki.scep.ScepError`.

    A client may have fetched an earlier RA certificate of the CA (before ``scep_ra --new``, or when two
    workers made one each on first use): each other unexpired RA of the CA is tried before giving up.
    """
    try:
        return _read(identity, data), identity
    except scep.ScepError as exc:
        if identity.ra is None or exc.fail_info != scep.FailInfo.BAD_MESSAGE_CHECK:
            raise
        others = ScepRaCertificate.objects.filter(ca=identity.ca, not_after__gt=now or utcnow()).exclude(
            pk=identity.ra.pk
        )
        for ra in others.order_by("-created_at")[:4]:
            other = ScepIdentity(
                ca=identity.ca, certificate_der=bytes(ra.certificate_der), key=ra_key(ra), ra=ra
            )
            try:
                return _read(other, data), other
            except scep.ScepError:
                continue
        raise


def _read(identity: ScepIdentity, data: bytes) -> scep.PkiMessage:
    return scep.read_pki_message(
        data=data, decrypt_key=identity.key, decrypt_certificate_der=identity.certificate_der
    )


def signer_key_sha256(*, message: scep.PkiMessage) -> str:
    """The lower-case hex SHA-256 of the SubjectPublicKeyInfo the message was signed with (the form of
    ``EnrollmentRequest.spki_sha256`` and ``Certificate.spki_sha256``)."""
    return hashlib.sha256(message.signer_public_key_der).hexdigest()


def renewal_certificate(*, message: scep.PkiMessage) -> Certificate | None:
    """The portal's certificate a RenewalReq is signed with (RFC 8894 section 3.3.1.2): the exact DER,
    stored; None when the signer is no certificate of this portal."""
    der = message.header.signer_certificate_der
    found = Certificate.objects.filter(fingerprint_sha256=hashlib.sha256(der).hexdigest()).first()
    if found is None or bytes(found.der) != der:
        return None
    return found


def reply(
    *,
    identity: ScepIdentity,
    header: scep.MessageHeader,
    status: scep.PkiStatus,
    certificate: Certificate | None = None,
    fail_info: scep.FailInfo | None = None,
    fail_text: str = "",
    now: dt.datetime | None = None,
) -> bytes:
    """The signed CertRep to the request ``header`` came from (:func:`ca.pki.scep.cert_rep`)."""
    return scep.cert_rep(
        header=header,
        status=status,
        signer_certificate_der=identity.certificate_der,
        signer_key=identity.key,
        issued_certificate_der=bytes(certificate.der) if certificate is not None else None,
        fail_info=fail_info,
        fail_text=fail_text,
        now=now or utcnow(),
    )
