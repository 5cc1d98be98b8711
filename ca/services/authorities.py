"""Certificate authorities: create a root or intermediate CA, import an existing one, the default CA."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import (
    AuditEvent,
    CertificateAuthority,
)
from ca.pki import keys as pki_keys
from ca.pki.errors import CAKeyError
from ca.pki.profiles import (
    build_ca_certificate,
    build_ca_name,
)
from ca.pki.serials import format_serial, new_serial
from ca.services import crl, keys, reservations

logger = logging.getLogger(__name__)


#: Names under /pki/ that are not CAs: /pki/ocsp (the one responder), /pki/report, /pki/health.json.
RESERVED_SLUGS = frozenset({"ocsp", "report", "health"})


def _unique_slug(name: str) -> str:
    base = slugify(name)[:56] or "ca"
    slug, counter = base, 2
    while slug in RESERVED_SLUGS or CertificateAuthority.objects.filter(slug=slug).exists():
        slug, counter = f"{base}-{counter}", counter + 1
    return slug


def _sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _save_ca(
    *,
    slug: str,
    name: str,
    certificate: x509.Certificate,
    key: pki_keys.CAPrivateKey,
    key_type: str,
    parent: CertificateAuthority | None,
    make_default: bool,
    now: dt.datetime,
) -> CertificateAuthority:
    if slug in RESERVED_SLUGS:
        raise CAError(
            f"'{slug}' names a public URL of the portal (/pki/{slug}); choose another slug for the CA."
        )
    key_file = f"{slug}-{secrets.token_hex(4)}.key.pem"
    with from_core():
        pki_keys.save_ca_key(
            key=key,
            path=Path(settings.ENROLL_CA_KEY_DIR) / key_file,
            passphrase=settings.ENROLL_CA_PASSPHRASE,
        )
    der = certificate.public_bytes(serialization.Encoding.DER)
    with transaction.atomic():
        if make_default:
            CertificateAuthority.objects.filter(is_default=True).update(is_default=False)
        ca = CertificateAuthority.objects.create(
            slug=slug,
            name=name,
            parent=parent,
            certificate_der=der,
            key_file=key_file,
            key_type=key_type,
            subject=certificate.subject.rfc4514_string(),
            serial=format_serial(serial=certificate.serial_number),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=_sha256(der),
            is_default=make_default,
            created_at=now,
        )
        audit.record(
            event=AuditEvent.CA_CREATED, ca_slug=ca.slug, serial=ca.serial, detail=ca.subject, now=now
        )
        crl.publish_crl(ca=ca, now=now)
    return ca


def create_ca(
    *,
    name: str,
    key_type: pki_keys.CAKeyType = pki_keys.CAKeyType.EC_P256,
    days: int = 3650,
    parent: CertificateAuthority | None = None,
    slug: str | None = None,
    make_default: bool | None = None,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Generate a CA key and certificate (root, or intermediate under ``parent``) and publish its first CRL.

    The first CA created becomes the default issuer unless ``make_default`` says otherwise.
    """
    now = now or utcnow()
    slug = slug or _unique_slug(name)
    if CertificateAuthority.objects.filter(slug=slug).exists():
        raise CAError(f"A CA with the slug '{slug}' exists already; choose another --slug.")
    if make_default is None:
        make_default = not CertificateAuthority.objects.filter(is_default=True).exists()
    key = pki_keys.generate_ca_key(key_type=key_type)
    not_before = now - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=days)
    with from_core():
        if parent is None:
            certificate = build_ca_certificate(
                subject=build_ca_name(common_name=name, organization=settings.ENROLL_ORGANIZATION or None),
                key=key,
                serial=new_serial(),
                not_before=not_before,
                not_after=not_after,
            )
        else:
            not_after = min(not_after, parent.not_after)
            # the parent's serials are reserved before it signs, as for client certificates
            (reservation,) = reservations.reserve(
                ca=parent, purposes=[f"CA certificate of {slug}"], not_after=not_after, now=now
            )
            certificate = build_ca_certificate(
                subject=build_ca_name(common_name=name, organization=settings.ENROLL_ORGANIZATION or None),
                key=key,
                serial=int(reservation.serial, 16),
                not_before=not_before,
                not_after=not_after,
                issuer=parent.certificate,
                issuer_key=keys.load_key(parent),
                issuer_urls=parent.urls,
            )
    saved = _save_ca(
        slug=slug,
        name=name,
        certificate=certificate,
        key=key,
        key_type=str(key_type),
        parent=parent,
        make_default=make_default,
        now=now,
    )
    if parent is not None:
        reservations.mark_issued(reservations=[reservation], now=now)
    return saved


#: The names create_ca uses (CAKeyType), so imported and generated CAs read alike.
_EC_KEY_TYPES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}


def _load_import_key(*, key_pem: bytes, key_passphrase: str | None) -> pki_keys.CAPrivateKey:
    """The key to import, unencrypted or encrypted with ``key_passphrase``.

    An unencrypted key is read without the passphrase (`cryptography` refuses a password for a key
    that is not encrypted), so the operator's configured passphrase does not get in the way.
    """
    try:
        return pki_keys.load_private_key_pem(pem=key_pem, passphrase=None)
    except CAKeyError:
        if not key_passphrase:
            raise
    return pki_keys.load_private_key_pem(pem=key_pem, passphrase=key_passphrase)


def import_ca(
    *,
    cert_pem: bytes,
    key_pem: bytes,
    key_passphrase: str | None = None,
    slug: str | None = None,
    make_default: bool | None = None,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Take over an existing CA: check the certificate is a CA and the key matches, store the key encrypted.

    The parent is found among the known CAs by issuer name and signature; a CA whose issuer is not here
    (an intermediate of an offline root) is imported without a parent.
    """
    now = now or utcnow()
    try:
        certificate = (
            x509.load_pem_x509_certificate(cert_pem)
            if b"-----BEGIN" in cert_pem
            else x509.load_der_x509_certificate(cert_pem)
        )
    except ValueError:
        raise CAError("The CA certificate file is not a PEM or DER certificate.") from None
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound as exc:
        raise CAError(
            f"The certificate lacks the {exc.oid._name} extension a CA certificate needs."
        ) from None
    if not constraints.ca or not usage.key_cert_sign or not usage.crl_sign:
        raise CAError(
            "The certificate is not a CA certificate (cA=TRUE, keyCertSign and cRLSign are needed)."
        )
    with from_core():
        key = _load_import_key(key_pem=key_pem, key_passphrase=key_passphrase)
        pki_keys.check_key_matches(key=key, certificate=certificate)
    der = certificate.public_bytes(serialization.Encoding.DER)
    if CertificateAuthority.objects.filter(fingerprint_sha256=_sha256(der)).exists():
        raise CAError("This CA certificate has been imported already.")
    parent = None
    for candidate in CertificateAuthority.objects.exclude(fingerprint_sha256=_sha256(der)):
        if candidate.certificate.subject == certificate.issuer:
            try:
                certificate.verify_directly_issued_by(candidate.certificate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            parent = candidate
            break
    common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(common_name[0].value) if common_name else certificate.subject.rfc4514_string()
    if make_default is None:
        make_default = not CertificateAuthority.objects.filter(is_default=True).exists()
    if isinstance(key, rsa.RSAPrivateKey):
        key_type = f"rsa-{key.key_size}"
    else:
        key_type = _EC_KEY_TYPES.get(key.curve.name, f"ec-{key.curve.name}")
    return _save_ca(
        slug=slug or _unique_slug(name),
        name=name[:64],
        certificate=certificate,
        key=key,
        key_type=key_type,
        parent=parent,
        make_default=make_default,
        now=now,
    )


def default_ca() -> CertificateAuthority:
    ca = CertificateAuthority.objects.filter(is_default=True).first()
    if ca is None:
        raise CAError("No CA issues certificates yet: create one with manage.py init_ca --name NAME.")
    return ca
