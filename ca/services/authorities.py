"""Certificate authorities: create a root or intermediate CA, import an existing one, move a CA's key into
a PKCS#11 token, the default CA.

A CA key is either an encrypted file in the CA key folder or a key in a PKCS#11 token
(:mod:`ca.pki.pkcs11`, generated there non-extractable); every CA certificate is signed through a key
backend (:func:`ca.pki.signing.sign_certificate`): a root's own, or its parent's (:func:`keys.key_backend`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import (
    AuditEvent,
    CertificateAuthority,
    SerialReservation,
)
from ca.pki import keys as pki_keys
from ca.pki import pkcs11 as pki_pkcs11
from ca.pki import signing as pki_signing
from ca.pki.errors import CAKeyError
from ca.pki.profiles import (
    build_ca_name,
    ca_certificate_builder,
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


@dataclass(frozen=True, slots=True)
class TokenPlacement:
    """A PKCS#11 token for a CA key: the module that reaches it, the token's label, its user PIN (kept
    in memory only)."""

    module_path: str
    token: str
    pin: str = ""

    def key(self, *, label: str, key_id: bytes = b"") -> pki_pkcs11.TokenKey:
        return pki_pkcs11.TokenKey(module_path=self.module_path, token=self.token, label=label, id=key_id)


@dataclass(frozen=True, slots=True)
class Lineage:
    """What a new key generation of a CA stores beside its certificate (:mod:`ca.services.rollover`): the
    generation it replaces, the two link certificates (old-signs-new, new-signs-old DER), and a step that
    runs in the transaction that stores it."""

    previous: CertificateAuthority
    links: tuple[bytes, bytes]
    also: Callable[[CertificateAuthority], None]


def token_label(slug: str) -> str:
    return f"enroll-ca-{slug}"


def _public_key(certificate: x509.Certificate) -> pki_signing.CAPublicKey:
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CAError("A CA key must be RSA or ECDSA.")
    return public_key


def _key_type_of(public_key: pki_signing.CAPublicKey) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    return _EC_KEY_TYPES.get(public_key.curve.name, f"ec-{public_key.curve.name}")


def _save_ca(
    *,
    slug: str,
    name: str,
    certificate: x509.Certificate,
    key: pki_keys.CAPrivateKey | pki_pkcs11.Pkcs11KeyBackend,
    key_type: str,
    parent: CertificateAuthority | None,
    make_default: bool,
    now: dt.datetime,
    previous: CertificateAuthority | None = None,
    links: tuple[bytes, bytes] = (b"", b""),
    also: Callable[[CertificateAuthority], None] | None = None,
) -> CertificateAuthority:
    """Store the key (a new encrypted file; a token key stays where it is, its URI stored), the CA's row,
    the audit entry and its first CRL (signed through the backend ``key`` is, for a token key).

    A new key generation (:mod:`ca.services.rollover`) names the ``previous`` one and carries its two
    ``links`` (old-signs-new, new-signs-old DER); ``also`` runs in the same transaction, after the row is
    made and before its first CRL."""
    if slug in RESERVED_SLUGS:
        raise CAError(
            f"'{slug}' names a public URL of the portal (/pki/{slug}); choose another slug for the CA."
        )
    if isinstance(key, pki_pkcs11.Pkcs11KeyBackend):
        key_file = key.where.uri()
        if len(key_file) > 255:  # CertificateAuthority.key_file's max_length
            raise CAError(
                "The PKCS#11 key's URI is longer than 255 characters; use a shorter module path or label."
            )
    else:
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
            previous=previous,
            link_from_previous_der=links[0],
            link_to_previous_der=links[1],
        )
        audit.record(
            event=AuditEvent.CA_CREATED,
            ca_slug=ca.slug,
            serial=ca.serial,
            detail=ca.subject + (" (key in PKCS#11 token)" if ca.key_in_token else ""),
            now=now,
        )
        if isinstance(key, pki_pkcs11.Pkcs11KeyBackend):
            keys.remember_token_backend(ca, key)
        if also is not None:
            also(ca)
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
    token: TokenPlacement | None = None,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Generate a CA key and certificate (root, or intermediate under ``parent``) and publish its first CRL.

    With ``token`` the key is generated inside that PKCS#11 token (sensitive, not extractable) and the
    CA signs through it; a key left in the token by a failure is removed again. The first CA created
    becomes the default issuer unless ``make_default`` says otherwise.
    """
    now = now or utcnow()
    slug = slug or _unique_slug(name)
    if CertificateAuthority.objects.filter(slug=slug).exists():
        raise CAError(f"A CA with the slug '{slug}' exists already; choose another --slug.")
    if make_default is None:
        make_default = not CertificateAuthority.objects.filter(is_default=True).exists()
    key: pki_keys.CAPrivateKey | pki_pkcs11.Pkcs11KeyBackend
    with from_core():
        if token is None:
            key = pki_keys.generate_ca_key(key_type=key_type)
            own: pki_signing.KeyBackend = pki_signing.PrivateKeyBackend(key=key)
        else:
            where = token.key(label=token_label(slug), key_id=pki_pkcs11.new_key_id())
            key = own = pki_pkcs11.generate_key(where=where, pin=token.pin, key_type=key_type)
    try:
        saved, reservation = sign_and_save(
            name=name,
            slug=slug,
            key=key,
            own=own,
            key_type=str(key_type),
            days=days,
            parent=parent,
            make_default=make_default,
            now=now,
        )
    except BaseException:
        remove_new_token_key(key=key, token=token, what="a CA that was not created")
        raise
    if reservation is not None:
        reservations.mark_issued(reservations=[reservation], now=now)
    return saved


def remove_new_token_key(
    *, key: pki_keys.CAPrivateKey | pki_pkcs11.Pkcs11KeyBackend, token: TokenPlacement | None, what: str
) -> None:
    """After a failure: take a key just generated in a token out again (logged when that fails too)."""
    if not isinstance(key, pki_pkcs11.Pkcs11KeyBackend):
        return
    try:
        pki_pkcs11.destroy_key(where=key.where, pin=token.pin if token else "")
    except CAKeyError:
        logger.error("the token key %s of %s is left in the token", key.where.uri(), what)


def sign_and_save(
    *,
    name: str,
    slug: str,
    key: pki_keys.CAPrivateKey | pki_pkcs11.Pkcs11KeyBackend,
    own: pki_signing.KeyBackend,
    key_type: str,
    days: int,
    parent: CertificateAuthority | None,
    make_default: bool,
    now: dt.datetime,
    subject: x509.Name | None = None,
    lineage: Callable[[x509.Certificate], Lineage] | None = None,
) -> tuple[CertificateAuthority, SerialReservation | None]:
    """The CA certificate signed by its own key (a root) or its parent's backend, and the CA stored.

    ``subject`` is the CA's name (default: from ``name`` and the organisation setting); ``lineage``, given
    the signed certificate, makes what a new key generation stores beside it (a rollover's links)."""
    not_before = now - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=days)
    if subject is None:
        subject = build_ca_name(common_name=name, organization=settings.ENROLL_ORGANIZATION or None)
    reservation = None
    with from_core():
        public_key = own.public_key()
        if parent is None:
            builder = ca_certificate_builder(
                subject=subject,
                public_key=public_key,
                serial=new_serial(),
                not_before=not_before,
                not_after=not_after,
            )
            certificate = pki_signing.sign_certificate(builder=builder, backend=own)
        else:
            not_after = min(not_after, parent.not_after)
            # the parent's serials are reserved before it signs, as for client certificates
            (reservation,) = reservations.reserve(
                ca=parent, purposes=[f"CA certificate of {slug}"], not_after=not_after, now=now
            )
            builder = ca_certificate_builder(
                subject=subject,
                public_key=public_key,
                serial=int(reservation.serial, 16),
                not_before=not_before,
                not_after=not_after,
                issuer=parent.certificate,
                issuer_urls=parent.urls,
            )
            certificate = pki_signing.sign_certificate(builder=builder, backend=keys.key_backend(parent))
    generation = lineage(certificate) if lineage is not None else None
    saved = _save_ca(
        slug=slug,
        name=name,
        certificate=certificate,
        key=key,
        key_type=key_type,
        parent=parent,
        make_default=make_default,
        now=now,
        previous=generation.previous if generation else None,
        links=generation.links if generation else (b"", b""),
        also=generation.also if generation else None,
    )
    return saved, reservation


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
    key_pem: bytes | None = None,
    key_passphrase: str | None = None,
    token: TokenPlacement | None = None,
    token_label: str = "",
    slug: str | None = None,
    make_default: bool | None = None,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Take over an existing CA: check the certificate is a CA and the key matches, store the key encrypted;
    or, with ``token`` and ``token_label``, point the CA at that existing key in a PKCS#11 token (checked
    with a test signature that must verify with the certificate's key).

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
    key: pki_keys.CAPrivateKey | pki_pkcs11.Pkcs11KeyBackend
    with from_core():
        if token is not None:
            key = pki_pkcs11.Pkcs11KeyBackend(
                where=token.key(label=token_label), pin=token.pin, public_key=_public_key(certificate)
            )
            _test_signature(backend=key, certificate=certificate)
        elif key_pem is not None:
            key = _load_import_key(key_pem=key_pem, key_passphrase=key_passphrase)
            pki_keys.check_key_matches(key=key, certificate=certificate)
        else:
            raise CAError("Give the CA's key: a key file, or a PKCS#11 token and the key's label.")
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
    key_type = _key_type_of(_public_key(certificate))
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


def _test_signature(*, backend: pki_signing.KeyBackend, certificate: x509.Certificate) -> None:
    """Sign a probe with ``backend`` and verify it with the certificate's public key (CAKeyError if the
    backend holds another key or cannot sign)."""
    public_key = _public_key(certificate)
    algorithm = pki_signing.signature_hash(public_key=public_key)
    probe = b"enroll CA key test signature " + secrets.token_bytes(16)
    signature = backend.sign(data=probe, algorithm=algorithm, purpose=pki_signing.Purpose.CERTIFICATE)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, probe, padding.PKCS1v15(), algorithm)
        else:
            public_key.verify(signature, probe, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise CAKeyError(
            "The key in the token does not belong to the CA certificate (a test signature does not verify "
            "with the certificate's public key): check the key's label."
        ) from None


def move_ca_key(
    *, ca: CertificateAuthority, token: TokenPlacement, now: dt.datetime | None = None
) -> CertificateAuthority:
    """Move the CA's key file into a PKCS#11 token: import the key there (sensitive, not extractable),
    make a test signature that must verify with the CA certificate, point the CA at the token key, publish
    a CRL through it, and only then delete the key file. A failure before the switch leaves the CA on its
    file and removes the copy from the token."""
    now = now or utcnow()
    if ca.key_in_token:
        raise CAError(f"The key of CA '{ca.slug}' is in a PKCS#11 token already.")
    path = keys.key_path(ca)
    with from_core():
        file_key = keys.load_key(ca)
        where = token.key(label=token_label(ca.slug), key_id=pki_pkcs11.new_key_id())
        backend = pki_pkcs11.import_key(where=where, pin=token.pin, key=file_key)
    try:
        with from_core():
            backend = pki_pkcs11.Pkcs11KeyBackend(
                where=where, pin=token.pin, public_key=_public_key(ca.certificate)
            )
            _test_signature(backend=backend, certificate=ca.certificate)
        with transaction.atomic():
            locked = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
            if locked.key_file != ca.key_file:
                raise CAError(f"The key of CA '{ca.slug}' was changed meanwhile; nothing was moved.")
            locked.key_file = where.uri()
            locked.save(update_fields=["key_file"])
            audit.record(
                event=AuditEvent.CA_KEY_MOVED,
                ca_slug=locked.slug,
                serial=locked.serial,
                detail=f"into PKCS#11 token {token.token} ({where.uri()}); the key file is deleted",
                now=now,
            )
    except BaseException:
        try:
            pki_pkcs11.destroy_key(where=where, pin=token.pin)
        except CAKeyError:
            logger.error("the copy of CA %s's key in the token is left behind: %s", ca.slug, where.uri())
        raise
    keys.remember_token_backend(locked, backend)
    keys.clear_file_key(ca)
    logger.warning("the key of CA %s moved into PKCS#11 token %s (%s)", ca.slug, token.token, where.uri())
    crl.publish_crl(ca=locked, now=now)
    path.unlink(missing_ok=True)
    return locked


def default_ca() -> CertificateAuthority:
    """The CA that issues when none is named (with its successor looked up, for newest_generation())."""
    ca = CertificateAuthority.objects.filter(is_default=True).select_related("successor").first()
    if ca is None:
        raise CAError("No CA issues certificates yet: create one with manage.py init_ca --name NAME.")
    return ca
