"""CA operations across rows: create or import a CA, issue, revoke, publish and serve CRLs, export.

Everything that signs loads the CA key through :mod:`ca.pki.keys` (the only reader of key files).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef, QuerySet
from django.db.models.functions import Length
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.text import slugify

from ca import audit
from ca.clock import utcnow
from ca.models import (
    AuditEvent,
    BlockedKey,
    BlockedKeySource,
    Certificate,
    CertificateAuthority,
    CrlFetch,
    CrlPublication,
    Revocation,
    RevocationReason,
)
from ca.pki import crl as pki_crl
from ca.pki import keys as pki_keys
from ca.pki import lint as pki_lint
from ca.pki import ocsp as pki_ocsp
from ca.pki.csr import check_csr_der
from ca.pki.errors import CAKeyError, RequestRefused
from ca.pki.ocsp import CertificateState, OcspAnswer
from ca.pki.pem import pem_armor
from ca.pki.profiles import (
    IssuerUrls,
    Profile,
    ProfileError,
    SubjectInfo,
    build_ca_certificate,
    build_ca_name,
    build_client_certificate,
    get_profile,
    validity_window,
)
from ca.pki.serials import format_serial, new_serial, parse_serial
from ca.pki.spkac import check_spkac_der
from ca.types import Account

logger = logging.getLogger(__name__)


class CAError(Exception):
    """A CA operation cannot be done; the message says why and what to do."""


# --- keys ------------------------------------------------------------------------------------------

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


def clear_key_cache() -> None:
    with _key_cache_lock:
        _key_cache.clear()


# --- creating and importing CAs --------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:56] or "ca"
    slug, counter = base, 2
    while CertificateAuthority.objects.filter(slug=slug).exists():
        slug, counter = f"{base}-{counter}", counter + 1
    return slug


def _fingerprint(der: bytes) -> str:
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
    key_file = f"{slug}-{secrets.token_hex(4)}.key.pem"
    try:
        pki_keys.save_ca_key(
            key=key,
            path=Path(settings.ENROLL_CA_KEY_DIR) / key_file,
            passphrase=settings.ENROLL_CA_PASSPHRASE,
        )
    except CAKeyError as exc:
        raise CAError(str(exc)) from exc
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
            fingerprint_sha256=_fingerprint(der),
            is_default=make_default,
            created_at=now,
        )
        audit.record(
            event=AuditEvent.CA_CREATED, ca_slug=ca.slug, serial=ca.serial, detail=ca.subject, now=now
        )
        publish_crl(ca=ca, now=now)
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
    try:
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
            certificate = build_ca_certificate(
                subject=build_ca_name(common_name=name, organization=settings.ENROLL_ORGANIZATION or None),
                key=key,
                serial=new_serial(),
                not_before=not_before,
                not_after=not_after,
                issuer=parent.certificate,
                issuer_key=load_key(parent),
                issuer_urls=parent.urls,
            )
    except (ProfileError, CAKeyError) as exc:
        raise CAError(str(exc)) from exc
    return _save_ca(
        slug=slug,
        name=name,
        certificate=certificate,
        key=key,
        key_type=str(key_type),
        parent=parent,
        make_default=make_default,
        now=now,
    )


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
    try:
        key = _load_import_key(key_pem=key_pem, key_passphrase=key_passphrase)
        pki_keys.check_key_matches(key=key, certificate=certificate)
    except CAKeyError as exc:
        raise CAError(str(exc)) from exc
    der = certificate.public_bytes(serialization.Encoding.DER)
    if CertificateAuthority.objects.filter(fingerprint_sha256=_fingerprint(der)).exists():
        raise CAError("This CA certificate has been imported already.")
    parent = None
    for candidate in CertificateAuthority.objects.exclude(fingerprint_sha256=_fingerprint(der)):
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


# --- issuing ---------------------------------------------------------------------------------------


#: The request formats the CA re-checks and signs: PKCS#10 and Netscape SPKAC.
REQUEST_FORMATS = ("csr", "spkac")


@dataclass(frozen=True, slots=True)
class _Checked:
    """What signing needs from a re-checked request of any format."""

    sha256: str
    public_key: CertificatePublicKeyTypes
    spki_sha256: str


def _recheck(*, request_der: bytes, kind: str) -> _Checked:
    """Re-check a stored request with the same rules as at submission (SPKAC: MD5 per the setting)."""
    if kind == "csr":
        csr = check_csr_der(der=request_der)
        return _Checked(csr.sha256, csr.csr.public_key(), csr.key.spki_sha256)
    if kind == "spkac":
        spkac = check_spkac_der(der=request_der, allow_md5=bool(settings.ENROLL_SPKAC_ALLOW_MD5))
        if not isinstance(spkac.public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise CAError("The SPKAC's key type cannot be certified.")
        return _Checked(spkac.sha256, spkac.public_key, spkac.key.spki_sha256)
    raise CAError(f"Unknown request format '{kind}'; the CA signs {' and '.join(REQUEST_FORMATS)} requests.")


#: Why a key is refused, at submission and again at issuance (the owner reads it: what, and what to do).
KEY_BLOCKED = (
    "This key was reported as compromised or is known to be unsafe, so it can never be certified again. "
    "Make a new key and submit a request made from it."
)
KEY_OF_ANOTHER_ACCOUNT = (
    "This key belongs to another account: a certificate for it was issued to someone else. "
    "Create a new key and submit a request made from it."
)

#: Longest IN (...) list in one query (SQLite allows far more parameters; this keeps statements small).
_IN_CHUNK = 500


def key_refusals(*, keys: Sequence[tuple[str, int | None]]) -> list[str | None]:
    """For each (SPKI SHA-256, owner id): why no certificate may be issued for that key now, or None.

    A blocked key (:class:`ca.models.BlockedKey`) is refused for everyone. A key that is on any
    certificate of another owner (expired and revoked ones included) is refused too: one key, one
    account. The same owner may use a key again (renewal). Two queries per 500 distinct keys.
    """
    digests = sorted({spki for spki, _owner in keys})
    blocked: set[str] = set()
    owners: dict[str, set[int | None]] = {}
    for start in range(0, len(digests), _IN_CHUNK):
        part = digests[start : start + _IN_CHUNK]
        blocked.update(BlockedKey.objects.filter(spki_sha256__in=part).values_list("spki_sha256", flat=True))
        certified = (
            Certificate.objects.filter(spki_sha256__in=part).values_list("spki_sha256", "owner_id").distinct()
        )
        for spki, holder in certified:
            owners.setdefault(spki, set()).add(holder)
    refusals: list[str | None] = []
    for spki, owner_id in keys:
        if spki in blocked:
            refusals.append(KEY_BLOCKED)
        elif owners.get(spki, set()) - {owner_id}:
            refusals.append(KEY_OF_ANOTHER_ACCOUNT)
        else:
            refusals.append(None)
    return refusals


def key_refusal(*, spki_sha256: str, owner: Account | None) -> str | None:
    """Why no certificate may be issued for this key to ``owner`` (see :func:`key_refusals`), or None."""
    return key_refusals(keys=[(spki_sha256, _owner_id(owner))])[0]


def _owner_id(owner: Account | None) -> int | None:
    return owner.pk if owner is not None else None


@dataclass(frozen=True, slots=True)
class _Signer:
    """What signing needs that is the same for every certificate of one issuance (one or a batch)."""

    ca: CertificateAuthority
    key: pki_keys.CAPrivateKey
    not_before: dt.datetime
    not_after: dt.datetime
    urls: IssuerUrls
    lint: bool

    def sign(
        self, *, parsed: _Checked, subject: SubjectInfo, profile: Profile, serial: int, lint: bool = True
    ) -> tuple[x509.Certificate, bytes]:
        """Build and sign in memory; with linting on (and ``lint``), refuse (CAError) a certificate with
        ERROR or FATAL findings."""
        try:
            certificate = build_client_certificate(
                profile=profile,
                public_key=parsed.public_key,
                subject=subject,
                issuer=self.ca.certificate,
                issuer_key=self.key,
                serial=serial,
                not_before=self.not_before,
                not_after=self.not_after,
                urls=self.urls,
            )
        except ProfileError as exc:
            raise CAError(str(exc)) from exc
        der = certificate.public_bytes(serialization.Encoding.DER)
        if self.lint and lint:
            self.refuse_if_unclean(pki_lint.lint_certificate(der=der))
        return certificate, der

    def refuse_if_unclean(self, findings: list[pki_lint.Finding]) -> None:
        """Raise CAError naming the ERROR and FATAL findings, if there are any."""
        if (error := pki_lint.blocking_error(findings)) is not None:
            logger.error("CA %s refused to issue a certificate: %s", self.ca.slug, error)
            raise CAError(str(error)) from error


def _signer(*, ca: CertificateAuthority, validity: dt.timedelta | None, now: dt.datetime) -> _Signer:
    try:
        key = load_key(ca)
        not_before, not_after = validity_window(
            now=now,
            validity=validity or dt.timedelta(days=settings.ENROLL_CERT_VALIDITY_DAYS),
            issuer=ca.certificate,
        )
    except (ProfileError, CAKeyError) as exc:
        raise CAError(str(exc)) from exc
    return _Signer(
        ca=ca,
        key=key,
        not_before=not_before,
        not_after=not_after,
        urls=ca.urls,
        lint=bool(settings.ENROLL_LINT_BEFORE_SIGN),
    )


def _profile(name: str) -> Profile:
    try:
        return get_profile(name=name)
    except ProfileError as exc:
        raise CAError(str(exc)) from exc


def issue_certificate(
    *,
    request_der: bytes,
    subject: SubjectInfo,
    owner: Account | None,
    actor: Account | None = None,
    ca: CertificateAuthority | None = None,
    profile_name: str = "client",
    validity: dt.timedelta | None = None,
    now: dt.datetime | None = None,
    kind: str = "csr",
) -> Certificate:
    """Re-check a stored request and sign a certificate for it with the account's subject.

    ``kind`` is the request's format: ``"csr"`` (PKCS#10) or ``"spkac"`` (Netscape SPKAC, whose MD5
    signatures pass only with ``settings.ENROLL_SPKAC_ALLOW_MD5``; its challenge was checked at
    submission). Nothing but the public key is taken from the request: no subject, no extension.
    A blocked key or a key certified for another owner is refused (:func:`key_refusals`). With
    ``settings.ENROLL_LINT_BEFORE_SIGN`` the signed certificate is linted (:mod:`ca.pki.lint`) and only
    stored when no finding is an ERROR. Raises :class:`ca.pki.errors.RequestRefused` or :class:`CAError`
    and stores nothing on any problem. Must run inside a transaction: the serial is reserved by
    inserting the row before signing (a refused certificate's row, and so its serial, is rolled back).
    """
    parsed = _recheck(request_der=request_der, kind=kind)
    if (refusal := key_refusal(spki_sha256=parsed.spki_sha256, owner=owner)) is not None:
        raise CAError(refusal)
    return _sign(
        parsed=parsed,
        subject=subject,
        owner=owner,
        actor=actor,
        ca=ca or default_ca(),
        profile_name=profile_name,
        validity=validity,
        now=now or utcnow(),
    )


def _sign(
    *,
    parsed: _Checked,
    subject: SubjectInfo,
    owner: Account | None,
    actor: Account | None,
    ca: CertificateAuthority,
    profile_name: str,
    validity: dt.timedelta | None,
    now: dt.datetime,
) -> Certificate:
    profile = _profile(profile_name)
    signer = _signer(ca=ca, validity=validity, now=now)
    with transaction.atomic():
        row = Certificate(
            ca=ca,
            der=b"",
            subject="",
            not_before=signer.not_before,
            not_after=signer.not_after,
            owner=owner,
            spki_sha256=parsed.spki_sha256,
            profile=profile.name,
            request_sha256=parsed.sha256,
            created_at=now,
        )
        serial = _reserve_serial(row)
        certificate, der = signer.sign(parsed=parsed, subject=subject, profile=profile, serial=serial)
        row.der = der
        row.subject = certificate.subject.rfc4514_string()
        row.fingerprint_sha256 = _fingerprint(der)
        row.save(update_fields=["der", "subject", "fingerprint_sha256"])
        audit.record(**_issued_entry(row, actor=actor), now=now)
    logger.info("issued %s serial %s on CA %s", row.subject, row.serial, ca.slug)
    return row


def _issued_entry(row: Certificate, *, actor: Account | None) -> dict[str, Any]:
    return {
        "event": AuditEvent.CERTIFICATE_ISSUED,
        "actor": actor,
        "subject_user": row.owner,
        "ca_slug": row.ca.slug,
        "request_sha256": row.request_sha256,
        "serial": row.serial,
        "detail": row.subject,
    }


def _reserve_serial(row: Certificate) -> int:
    """Insert ``row`` with a fresh random serial (unique per CA by constraint); return the serial."""
    for _attempt in range(_SERIAL_ATTEMPTS):
        serial = new_serial()
        row.serial = format_serial(serial=serial)
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            logger.warning("serial collision on CA %s, drawing another", row.ca.slug)
            row.pk = None
            continue
        return serial
    raise CAError(SERIAL_EXHAUSTED)


_SERIAL_ATTEMPTS = 5
SERIAL_EXHAUSTED = "Could not reserve a unique serial number; try again."


# --- issuing many at once --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssueOrder:
    """One certificate for :func:`issue_many`: what :func:`issue_certificate` takes for one."""

    request_der: bytes
    subject: SubjectInfo
    owner: Account | None
    kind: str = "csr"
    profile_name: str = "client"


@dataclass(slots=True)
class _Draft:
    """A certificate signed in memory, not stored yet (``row`` has its serial, DER and subject)."""

    index: int
    order: IssueOrder
    parsed: _Checked
    profile: Profile
    row: Certificate


def issue_many(
    *,
    orders: Sequence[IssueOrder],
    actor: Account | None = None,
    ca: CertificateAuthority | None = None,
    validity: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> list[Certificate | str]:
    """Issue a certificate for each order at once: per order the stored certificate, or why none was.

    Each order gets the checks of :func:`issue_certificate` (re-check of the request, blocked key, key of
    another owner, also within this batch, profile, lint). Certificates are signed in memory with fresh
    serials and stored with one bulk insert in the caller's transaction (which it must open). Serials stay
    unique per CA by the database constraint: serials already taken are drawn again (and the certificate
    signed again) before the insert, and an insert that still collides (a concurrent issuance) is
    retried with new serials, so no certificate with a serial in use ever leaves this function.
    A problem common to all orders (no default CA, unreadable CA key, expired CA) is every order's reason.
    """
    now = now or utcnow()
    try:
        signer = _signer(ca=ca or default_ca(), validity=validity, now=now)
    except CAError as exc:
        return [str(exc)] * len(orders)
    outcomes: list[Certificate | str | None] = [None] * len(orders)
    checked: list[tuple[int, _Checked, Profile]] = []
    for index, order in enumerate(orders):
        try:
            profile = _profile(order.profile_name)
            checked.append((index, _recheck(request_der=order.request_der, kind=order.kind), profile))
        except (RequestRefused, CAError) as exc:
            outcomes[index] = str(exc)
    refusals = key_refusals(keys=[(p.spki_sha256, _owner_id(orders[i].owner)) for i, p, _ in checked])
    claimed: dict[str, int | None] = {}  # key -> owner, for the orders of this batch
    drafts: list[_Draft] = []
    for (index, parsed, profile), refusal in zip(checked, refusals, strict=True):
        owner_id = _owner_id(orders[index].owner)
        if refusal is None and claimed.setdefault(parsed.spki_sha256, owner_id) != owner_id:
            refusal = KEY_OF_ANOTHER_ACCOUNT
        if refusal is not None:
            outcomes[index] = refusal
            continue
        draft = _Draft(index, orders[index], parsed, profile, Certificate())
        try:
            _sign_draft(draft, signer=signer, now=now, lint=False)
        except CAError as exc:
            outcomes[index] = str(exc)
            continue
        drafts.append(draft)
    if signer.lint:
        drafts = _lint_drafts(drafts, signer=signer, outcomes=outcomes)
    for draft, outcome in zip(drafts, _store_drafts(drafts, signer=signer, now=now), strict=True):
        outcomes[draft.index] = outcome
    stored = [o for o in outcomes if isinstance(o, Certificate)]
    audit.record_many([audit.AuditItem(**_issued_entry(row, actor=actor)) for row in stored], now=now)
    if stored:
        logger.info("issued %s certificates on CA %s", len(stored), signer.ca.slug)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _lint_drafts(
    drafts: list[_Draft], *, signer: _Signer, outcomes: list[Certificate | str | None]
) -> list[_Draft]:
    """The drafts that lint clean (all linted at once, in worker processes for a large batch); the reason
    of each other one goes into ``outcomes``."""
    clean: list[_Draft] = []
    for draft, findings in zip(
        drafts, pki_lint.lint_many(ders=[bytes(d.row.der) for d in drafts]), strict=True
    ):
        try:
            signer.refuse_if_unclean(findings)
        except CAError as exc:
            outcomes[draft.index] = str(exc)
            continue
        clean.append(draft)
    return clean


def _sign_draft(draft: _Draft, *, signer: _Signer, now: dt.datetime, lint: bool = True) -> None:
    """Sign ``draft`` with a freshly drawn serial and fill its row (unsaved); lint it unless told not to."""
    serial = new_serial()
    certificate, der = signer.sign(
        parsed=draft.parsed, subject=draft.order.subject, profile=draft.profile, serial=serial, lint=lint
    )
    draft.row = Certificate(
        ca=signer.ca,
        serial=format_serial(serial=serial),
        der=der,
        subject=certificate.subject.rfc4514_string(),
        not_before=signer.not_before,
        not_after=signer.not_after,
        owner=draft.order.owner,
        fingerprint_sha256=_fingerprint(der),
        spki_sha256=draft.parsed.spki_sha256,
        profile=draft.profile.name,
        request_sha256=draft.parsed.sha256,
        created_at=now,
    )


def _taken_serials(*, ca: CertificateAuthority, serials: list[str]) -> set[str]:
    taken: set[str] = set()
    for start in range(0, len(serials), _IN_CHUNK):
        part = serials[start : start + _IN_CHUNK]
        taken.update(Certificate.objects.filter(ca=ca, serial__in=part).values_list("serial", flat=True))
    return taken


def _store_drafts(drafts: list[_Draft], *, signer: _Signer, now: dt.datetime) -> list[Certificate | str]:
    """Insert the drafts' rows in one statement; per draft the row or the reason it was not stored.

    A draft whose serial is taken (or drawn twice in this batch) is signed again with a new serial and
    the serials are checked again, up to five rounds; the insert happens only after a clean check.
    """
    outcomes: dict[int, Certificate | str] = {}
    live = list(drafts)
    for _attempt in range(_SERIAL_ATTEMPTS):
        taken = _taken_serials(ca=signer.ca, serials=[d.row.serial for d in live])
        collided: list[_Draft] = []
        for draft in live:
            if draft.row.serial in taken:
                collided.append(draft)
            taken.add(draft.row.serial)  # a serial drawn twice in this batch collides too
        if collided:
            logger.warning("serial collision on CA %s, drawing %s again", signer.ca.slug, len(collided))
            for draft in collided:
                try:
                    _sign_draft(draft, signer=signer, now=now)
                except CAError as exc:
                    outcomes[draft.index] = str(exc)
                    live.remove(draft)
            continue
        try:
            with transaction.atomic():
                Certificate.objects.bulk_create([d.row for d in live])
        except IntegrityError:
            # A serial was taken meanwhile (a concurrent issuance): which one is unknown, so all are drawn
            # again and signed again.
            logger.warning("serial collision on CA %s storing %s certificates", signer.ca.slug, len(live))
            for draft in list(live):
                try:
                    _sign_draft(draft, signer=signer, now=now)
                except CAError as exc:
                    outcomes[draft.index] = str(exc)
                    live.remove(draft)
            continue
        outcomes.update((d.index, d.row) for d in live)
        return [outcomes[d.index] for d in drafts]
    outcomes.update((d.index, SERIAL_EXHAUSTED) for d in live)
    return [outcomes[d.index] for d in drafts]


# --- revoking and CRLs -----------------------------------------------------------------------------


def find_certificate(*, serial: str, ca: CertificateAuthority | None = None) -> Certificate:
    """Look a certificate up by serial (hex, colons optional, any case)."""
    try:
        canonical = format_serial(serial=parse_serial(text=serial))
    except ValueError as exc:
        raise CAError(str(exc)) from None
    matches = Certificate.objects.filter(serial=canonical).exclude(der=b"")
    if ca is not None:
        matches = matches.filter(ca=ca)
    found = list(matches.select_related("ca")[:2])
    if not found:
        raise CAError(f"No certificate with serial {canonical} was issued here.")
    if len(found) > 1:
        raise CAError(f"Several CAs issued serial {canonical}; name the CA with --ca.")
    return found[0]


class AlreadyRevoked(CAError):
    pass


class CrlNotPublished(CAError):
    """The revocation is recorded, but the CRL that lists it could not be signed."""


def revoke_certificate(
    *,
    certificate: Certificate,
    reason: RevocationReason,
    by: Account | None = None,
    invalidity_date: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Revocation:
    """Record a revocation and publish a new CRL as soon as the revocation is committed.

    The CA row is locked (as publish_crl does) before the revocation time is taken, so every CRL either
    was read before this revocation's time (current_crl() then sees it as unpublished) or after its
    commit (and lists it): a revocation cannot fall between two CRLs unnoticed.
    """
    if invalidity_date is not None and invalidity_date > (now or utcnow()):
        raise CAError("The invalidity date cannot be in the future.")
    with transaction.atomic():
        # NO KEY UPDATE: serialises revocations and publications of this CA, yet does not block the
        # FOR KEY SHARE that PostgreSQL's deferred foreign-key checks take on this row at another
        # transaction's commit (an approval inserting certificates while holding the audit lock).
        CertificateAuthority.objects.select_for_update(no_key=True).only("pk").get(pk=certificate.ca_id)
        now = now or utcnow()
        locked = Certificate.objects.select_for_update().get(pk=certificate.pk)
        if Revocation.objects.filter(certificate=locked).exists():
            raise AlreadyRevoked(f"Certificate {locked.serial} is revoked already.")
        revocation = Revocation.objects.create(
            certificate=locked,
            reason=reason,
            revoked_at=now,
            invalidity_date=invalidity_date,
            revoked_by=by,
        )
        if reason == RevocationReason.KEY_COMPROMISE:
            block_key_of(locked, now=now)
        audit.record(
            event=AuditEvent.CERTIFICATE_REVOKED,
            actor=by,
            subject_user=locked.owner,
            ca_slug=locked.ca.slug,
            serial=locked.serial,
            detail=str(reason),
            now=now,
        )
        # Not robust on purpose: if signing the new CRL fails, the caller must hear it (the revocation
        # itself is committed; current_crl() also re-signs when it sees a revocation newer than the CRL).
        ca = locked.ca
        serial = locked.serial

        def publish_after_commit() -> None:
            try:
                publish_crl(ca=ca)
            except CAError as exc:
                raise CrlNotPublished(
                    f"Certificate {serial} is revoked, but the new CRL could not be signed: {exc} "
                    "Fix that and run manage.py publish_crl."
                ) from exc

        transaction.on_commit(publish_after_commit)
    logger.info("revoked serial %s on CA %s (%s)", locked.serial, ca.slug, reason)
    return revocation


def block_key_of(certificate: Certificate, *, now: dt.datetime) -> BlockedKey | None:
    """Block the key of ``certificate`` (revoked for key compromise) for every future request and issuance.

    Runs in the revocation's transaction; a key blocked already stays as it was (its first cause kept).
    """
    if not certificate.spki_sha256:
        return None
    blocked, _created = BlockedKey.objects.get_or_create(
        spki_sha256=certificate.spki_sha256,
        defaults={
            "source": BlockedKeySource.KEY_COMPROMISE,
            "certificate": certificate,
            "detail": f"revoked for key compromise: serial {certificate.serial}, CA {certificate.ca.slug}",
            "created_at": now,
        },
    )
    return blocked


def crl_lifetime() -> dt.timedelta:
    return dt.timedelta(hours=settings.ENROLL_CRL_LIFETIME_HOURS)


def is_stale(publication: CrlPublication, *, now: dt.datetime) -> bool:
    """A CRL is re-signed once half of its lifetime has passed, long before nextUpdate."""
    return _past_half_time(this_update=publication.this_update, next_update=publication.next_update, now=now)


def _past_half_time(*, this_update: dt.datetime, next_update: dt.datetime, now: dt.datetime) -> bool:
    return now >= this_update + (next_update - this_update) / 2


#: Revocations dated up to this long before the previous CRL read its entries are read again (and kept
#: out when that CRL lists them already): several web hosts' clocks may differ a little.
CARRY_OVER_SLACK = dt.timedelta(minutes=10)
#: Up to this many of those are looked up in the previous CRL one by one; more make a set of its serials.
_SINGLE_LOOKUPS = 4


def publish_crl(
    *,
    ca: CertificateAuthority,
    now: dt.datetime | None = None,
    unless_newer_than: int | None = None,
    by: Account | None = None,
) -> CrlPublication:
    """Sign and store a new CRL for ``ca`` with every revoked certificate that has not long expired.

    The CA row is locked for the whole step, so CRL numbers are strictly increasing and a CRL signed
    after a revocation commits always lists it. The number (:func:`next_crl_number`) keeps increasing
    even after an older database backup is restored.
    Entries stay until their certificate expired more than one CRL lifetime ago (RFC 5280 5.1.2.6:
    at least one regularly scheduled CRL after expiry lists it).

    The entries of the previous CRL are carried over as they were signed (:func:`_carry_over`): only
    revocations since then and the entries to drop are read. Without a usable previous CRL, every entry
    is read and built.
    """
    lifetime = crl_lifetime()
    with transaction.atomic():
        # NO KEY UPDATE, as in revoke_certificate: no deadlock with foreign-key checks at commit.
        locked = CertificateAuthority.objects.select_for_update(no_key=True).get(pk=ca.pk)
        now = now or utcnow()
        this_update = now.replace(microsecond=0)
        latest = CrlPublication.objects.filter(ca=locked).order_by("-number").defer("der").first()
        if unless_newer_than is not None and latest is not None and latest.number > unless_newer_than:
            # another process re-signed while this one waited for the lock
            return CrlPublication.objects.get(pk=latest.pk)
        number = next_crl_number(ca=locked, latest=latest.number if latest else None, now=this_update)
        try:
            key = load_key(locked)
        except CAKeyError as exc:
            raise CAError(str(exc)) from exc
        read_at = utcnow()
        cutoff = this_update - lifetime
        incremental = _carry_over(ca=locked, previous=latest, cutoff=cutoff) if latest is not None else None
        carried, entries = incremental or ([], _crl_entries(_revocations_listed(ca=locked, cutoff=cutoff)))
        signed = pki_crl.build_crl(
            issuer=locked.certificate,
            issuer_key=key,
            number=number,
            this_update=this_update,
            next_update=this_update + lifetime,
            entries=entries,
            carried_over=carried,
        )
        count = len(carried) + len(entries)
        der = signed.public_bytes(serialization.Encoding.DER)
        publication = CrlPublication.objects.create(
            ca=locked,
            number=number,
            this_update=this_update,
            next_update=this_update + lifetime,
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
            entries=count,
            created_at=read_at,
        )
        audit.record(
            event=AuditEvent.CRL_PUBLISHED,
            actor=by,
            ca_slug=locked.slug,
            crl_number=number,
            detail=f"{count} entries, next update {this_update + lifetime:%Y-%m-%d %H:%M} UTC",
            now=now,
        )
    logger.info(
        "published CRL #%s of CA %s with %s entries (%s)",
        number,
        locked.slug,
        count,
        f"{len(entries)} new, {len(carried)} carried over" if incremental else "built from all revocations",
    )
    return publication


def next_crl_number(*, ca: CertificateAuthority, latest: int | None, now: dt.datetime) -> int:
    """The next cRLNumber (RFC 5280 5.2.3: monotonically increasing) of ``ca``.

    Above the newest stored number, the Unix time and the highest number a front server reported
    fetching (:class:`ca.models.CrlFetch`): after an older database backup is restored, the numbers
    the portal served since the backup are gone from the CRL rows, but not from the clock, and the
    front servers that fetched one of them reported it.
    """
    served = CrlFetch.objects.filter(ca=ca).aggregate(highest=Max("number"))["highest"]
    return max((latest or 0) + 1, (served or 0) + 1, int(now.timestamp()))


def _revocations_listed(*, ca: CertificateAuthority, cutoff: dt.datetime) -> QuerySet[Revocation]:
    """The revocations a CRL of ``ca`` lists: those of certificates expired after ``cutoff`` or valid."""
    return Revocation.objects.filter(certificate__ca=ca, certificate__not_after__gt=cutoff)


def _crl_entries(revocations: QuerySet[Revocation]) -> list[pki_crl.CrlEntry]:
    rows = revocations.order_by("revoked_at", "pk").values_list(
        "certificate__serial", "revoked_at", "reason", "invalidity_date"
    )
    return [
        pki_crl.CrlEntry(
            serial=int(serial, 16),
            revoked_at=revoked_at,
            reason=RevocationReason(reason).flag,
            invalidity_date=invalidity_date,
        )
        for serial, revoked_at, reason, invalidity_date in rows.iterator(chunk_size=10000)
    ]


def _carry_over(
    *, ca: CertificateAuthority, previous: CrlPublication, cutoff: dt.datetime
) -> tuple[list[x509.RevokedCertificate], list[pki_crl.CrlEntry]] | None:
    """The previous CRL's entries still due and the revocations it lacks; None to build from all rows.

    Reads the revocations since the previous CRL read its own (:data:`CARRY_OVER_SLACK` earlier) and
    the serials whose certificates passed ``cutoff`` since. None when the previous CRL cannot be
    carried over (:func:`ca.pki.crl.previous_crl`: another CA or key, damaged), when it dropped entries
    that are due again (a longer lifetime, a publication dated earlier), or when the result would not
    have exactly as many entries as there are revocations to list (a revocation dated long before the
    CRL that missed it): then every entry is built from the rows.
    """
    previous_cutoff = previous.this_update - (previous.next_update - previous.this_update)
    if cutoff < previous_cutoff:
        return None
    # Both reads filter on one indexed column only (revoked_at, not_after) and leave the CA to Python:
    # given the CA too, SQLite walks every certificate of the CA instead of the few rows in range.
    since = (
        Revocation.objects.filter(revoked_at__gte=previous.created_at - CARRY_OVER_SLACK)
        .order_by("revoked_at", "pk")
        .values_list(
            "certificate__ca_id", "certificate__not_after", "certificate__serial", "revoked_at", "reason",
            "invalidity_date",
        )
    )  # fmt: skip
    fresh = [
        pki_crl.CrlEntry(
            serial=int(serial, 16),
            revoked_at=revoked_at,
            reason=RevocationReason(reason).flag,
            invalidity_date=invalidity_date,
        )
        for ca_id, not_after, serial, revoked_at, reason, invalidity_date in since
        if ca_id == ca.pk and not_after > cutoff
    ]
    expired = (
        Certificate.objects.filter(
            not_after__gt=previous_cutoff, not_after__lte=cutoff, revocation__isnull=False
        )
        .order_by()
        .values_list("ca_id", "serial")
    )
    dropped = {int(serial, 16) for ca_id, serial in expired if ca_id == ca.pk}
    der = CrlPublication.objects.filter(pk=previous.pk).values_list("der", flat=True).get()
    try:
        base = pki_crl.previous_crl(issuer=ca.certificate, previous_der=bytes(der))
    except pki_crl.PreviousCrlUnusable as exc:
        logger.warning("CRL #%s of CA %s is not carried over: %s", previous.number, ca.slug, exc)
        return None
    carried = base.entries
    # Only a revocation dated before the previous CRL read its entries can be on it (equal: frozen clocks).
    maybe_listed = [entry for entry in fresh if entry.revoked_at <= previous.created_at]
    if dropped or len(maybe_listed) > _SINGLE_LOOKUPS:
        serials = [revoked.serial_number for revoked in carried]
        if dropped:
            carried = [
                revoked for revoked, serial in zip(carried, serials, strict=True) if serial not in dropped
            ]
        on_previous = set(serials)
        new = [entry for entry in fresh if entry.serial not in on_previous]
    else:
        already = {entry.serial for entry in maybe_listed if base.lists(serial=entry.serial)}
        new = [entry for entry in fresh if entry.serial not in already]
    due = _revocations_listed(ca=ca, cutoff=cutoff).count()
    if len(carried) + len(new) != due:
        logger.warning(
            "CRL #%s of CA %s is not carried over: it would give %s entries for %s revocations",
            previous.number,
            ca.slug,
            len(carried) + len(new),
            due,
        )
        return None
    return carried, new


def _has_unpublished_revocations(publication: CrlPublication) -> bool:
    """A revocation recorded after the CRL read its entries (its own publication must have failed)."""
    return Revocation.objects.filter(
        certificate__ca_id=publication.ca_id, revoked_at__gt=publication.created_at
    ).exists()


def current_crl(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> CrlPublication:
    """The CRL to serve: the newest one, re-signed first when it is half-way to nextUpdate.

    Never returns an expired CRL: if it cannot be re-signed in time, :class:`CAError` is raised.
    """
    now = now or utcnow()
    latest = CrlPublication.objects.filter(ca=ca).order_by("-number").first()
    if latest is not None and not is_stale(latest, now=now) and not _has_unpublished_revocations(latest):
        return latest
    try:
        return publish_crl(ca=ca, now=now, unless_newer_than=latest.number if latest else 0)
    except CAError:
        logger.exception("could not re-sign the CRL of CA %s", ca.slug)
        if latest is not None and latest.next_update > now:
            return latest
        raise


@dataclass(frozen=True, slots=True)
class ServedCrl:
    """The CRL the public endpoint serves for one CA: its numbers and times and its bytes."""

    ca_id: int
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    sha256: str
    der: bytes
    pem: bytes


#: DER and PEM of recently served CRLs by publication id and SHA-256, per process (a stored CRL never
#: changes; the SHA-256 tells a row apart from a later one given the same id after a restore).
_CRL_BYTES: dict[tuple[int, str], tuple[bytes, bytes]] = {}
_CRL_BYTES_KEPT = 8
_CRL_BYTES_LOCK = threading.Lock()


def _crl_bytes(publication_id: int, sha256: str, der: bytes | None = None) -> tuple[bytes, bytes]:
    cached = _CRL_BYTES.get((publication_id, sha256))
    if cached is not None:
        return cached
    if der is None:
        der = bytes(CrlPublication.objects.filter(pk=publication_id).values_list("der", flat=True).get())
    cached = (der, pem_armor(der=der, label="X509 CRL"))
    with _CRL_BYTES_LOCK:  # threaded workers: one thread at a time drops the oldest
        while len(_CRL_BYTES) >= _CRL_BYTES_KEPT:
            _CRL_BYTES.pop(next(iter(_CRL_BYTES)))
        _CRL_BYTES[(publication_id, sha256)] = cached
    return cached


#: How long a process serves what it last read about a CA's newest CRL before reading it again. A
#: CRL signed by another process (or host) is served at most this much later; in this process at once.
CRL_RECHECK_SECONDS = 0.25
#: Per process, by CA slug: (monotonic time read, the newest CRL's row as :func:`_newest_crl_row` reads it).
_NEWEST_CRL: dict[str, tuple[float, tuple[Any, ...]]] = {}


def _newest_crl_row(slug: str) -> tuple[Any, ...] | None:
    """(id, CA id, number, thisUpdate, nextUpdate, SHA-256, a revocation is newer) of the newest CRL."""
    checked = _NEWEST_CRL.get(slug)
    if checked is not None and time.monotonic() - checked[0] < CRL_RECHECK_SECONDS:
        return checked[1]
    unpublished = Revocation.objects.filter(
        certificate__ca_id=OuterRef("ca_id"), revoked_at__gt=OuterRef("created_at")
    )
    row = (
        CrlPublication.objects.filter(ca__slug=slug)
        .order_by("-number")
        .values_list("pk", "ca_id", "number", "this_update", "next_update", "sha256", Exists(unpublished))
        .first()
    )
    if row is not None:
        _NEWEST_CRL[slug] = (time.monotonic(), row)
    return row


@receiver([post_save, post_delete], sender=Revocation, dispatch_uid="ca.services.crl_recheck_revocation")
@receiver([post_save, post_delete], sender=CrlPublication, dispatch_uid="ca.services.crl_recheck_crl")
def _recheck_newest_crl(**_kwargs: object) -> None:
    """A revocation or CRL written in this process: the next download reads the newest CRL again."""
    _NEWEST_CRL.clear()


def crl_to_serve(*, slug: str, now: dt.datetime | None = None) -> ServedCrl | None:
    """What :func:`current_crl` returns for the CA ``slug``, in one small query when nothing is due.

    That query reads the newest CRL's numbers and times (not its DER) and whether a revocation is
    newer than it, at most every :data:`CRL_RECHECK_SECONDS` per process (at once after a revocation or
    CRL written in this process); the bytes come from a per-process cache. A CRL half-way to nextUpdate
    (checked on every download) or missing a revocation goes through :func:`current_crl` (re-signed,
    never expired). None: no CA ``slug``.
    Raises :class:`CAError` when the CRL is due and cannot be signed and the last one has expired.
    """
    now = now or utcnow()
    row = _newest_crl_row(slug)
    if row is not None:
        pk, ca_id, number, this_update, next_update, sha256, newer_revocation = row
        due = _past_half_time(this_update=this_update, next_update=next_update, now=now)
        if not newer_revocation and not due:
            der, pem = _crl_bytes(pk, sha256)
            return ServedCrl(ca_id, number, this_update, next_update, sha256, der, pem)
    ca = CertificateAuthority.objects.filter(slug=slug).first()
    if ca is None:
        return None
    publication = current_crl(ca=ca, now=now)
    der, pem = _crl_bytes(publication.pk, publication.sha256, bytes(publication.der))
    return ServedCrl(
        ca.pk,
        publication.number,
        publication.this_update,
        publication.next_update,
        publication.sha256,
        der,
        pem,
    )


# --- propagation to front servers -------------------------------------------------------------------

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def record_fetch(
    *, ca: CertificateAuthority | int, node: str, number: int, now: dt.datetime | None = None
) -> None:
    """Note that front server ``node`` has CRL ``number`` of ``ca`` (or its id); ignores malformed names."""
    if not _NODE_NAME.fullmatch(node):
        return
    now = now or utcnow()
    ca_id = ca if isinstance(ca, int) else ca.pk
    updated = CrlFetch.objects.filter(ca_id=ca_id, node=node, number=number).update(last_seen=now)
    if not updated:
        CrlFetch.objects.update_or_create(
            ca_id=ca_id, node=node, defaults={"number": number, "since": now, "last_seen": now}
        )


@dataclass(frozen=True, slots=True)
class NodeState:
    node: str
    number: int
    since: dt.datetime
    last_seen: dt.datetime
    current: bool


#: Below this share of its lifetime left, a CRL's color is red.
RED_FRACTION = 0.1


class CrlColor(StrEnum):
    """A CRL's freshness, by the time left until nextUpdate compared with its lifetime.

    * green: more than half of the lifetime is left (a CRL is re-signed once half of it has passed);
    * amber: half or less is left: the re-sign is overdue (the cron job ``publish_crl --if-stale`` or the
      lazy re-sign on download did not run); front servers still accept it;
    * red: less than :data:`RED_FRACTION` is left, or it has expired (or none was ever published): front
      servers that check CRLs (nginx) refuse every client once nextUpdate passes.
    """

    GREEN = "green"
    AMBER = "amber"
    RED = "red"


def crl_color(*, this_update: dt.datetime, next_update: dt.datetime, now: dt.datetime) -> CrlColor:
    """Green while more than half the lifetime is left (not stale), amber down to a tenth, red below."""
    lifetime = next_update - this_update
    if lifetime <= dt.timedelta(0) or next_update - now < lifetime * RED_FRACTION:
        return CrlColor.RED
    if _past_half_time(this_update=this_update, next_update=next_update, now=now):
        return CrlColor.AMBER
    return CrlColor.GREEN


@dataclass(frozen=True, slots=True)
class CrlHealth:
    """One CA's newest CRL as stored (its DER not loaded), its color, and which front servers have it."""

    ca: CertificateAuthority
    crl: CrlPublication | None
    size: int  # bytes of the CRL's DER
    seconds_left: int
    color: CrlColor
    nodes: list[NodeState]

    @property
    def summary(self) -> str:
        """E.g. "CRL #42: web1, web2 have it; web3 still at #41 since 10:02"."""
        if self.crl is None:
            return "no CRL yet"
        current = [n.node for n in self.nodes if n.current]
        behind = [f"{n.node} still at #{n.number} since {n.since:%H:%M}" for n in self.nodes if not n.current]
        parts = [f"{', '.join(current)} {'has' if len(current) == 1 else 'have'} it"] if current else []
        return f"CRL #{self.crl.number}: " + ("; ".join(parts + behind) or "no front server has reported yet")


def crl_health(*, ca: CertificateAuthority, now: dt.datetime | None = None) -> CrlHealth:
    """The newest CRL of ``ca`` as stored (looking does not re-sign it), its color and its propagation."""
    now = now or utcnow()
    latest = (
        CrlPublication.objects.filter(ca=ca)
        .annotate(size=Length("der"))
        .defer("der")
        .order_by("-number")
        .first()
    )
    nodes = [
        NodeState(f.node, f.number, f.since, f.last_seen, latest is not None and f.number >= latest.number)
        for f in CrlFetch.objects.filter(ca=ca).order_by("node")
    ]
    if latest is None:
        return CrlHealth(ca=ca, crl=None, size=0, seconds_left=0, color=CrlColor.RED, nodes=nodes)
    return CrlHealth(
        ca=ca,
        crl=latest,
        size=int(getattr(latest, "size", 0) or 0),
        seconds_left=int((latest.next_update - now).total_seconds()),
        color=crl_color(this_update=latest.this_update, next_update=latest.next_update, now=now),
        nodes=nodes,
    )


# --- OCSP ------------------------------------------------------------------------------------------


def ocsp_response(
    *, ca: CertificateAuthority, request_der: bytes, now: dt.datetime | None = None
) -> OcspAnswer:
    """Answer an OCSP request for ``ca`` from the database (a revocation counts from its commit)."""
    now = now or utcnow()

    def lookup(serial: int) -> CertificateState | None:
        if serial <= 0 or serial.bit_length() > 160:
            return None
        row = (
            Certificate.objects.filter(ca=ca, serial=format_serial(serial=serial))
            .exclude(der=b"")
            .values_list("revocation__revoked_at", "revocation__reason")
            .first()
        )
        if row is None:
            return None
        revoked_at, reason = row
        return CertificateState(
            revoked_at=revoked_at, reason=RevocationReason(reason).flag if reason else None
        )

    try:
        key = load_key(ca)
    except CAKeyError as exc:
        raise CAError(str(exc)) from exc
    return pki_ocsp.respond(
        request_der=request_der,
        issuer=ca.certificate,
        issuer_key=key,
        lookup=lookup,
        now=now,
        validity=dt.timedelta(seconds=settings.ENROLL_OCSP_VALIDITY_SECONDS),
    )


# --- exporting -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Export:
    content: bytes
    content_type: str
    extension: str


EXPORT_FORMATS = ("pem", "der", "chain", "pkcs7")
#: Offered only where they fit (x509-user-cert: on the page of a certificate issued for an SPKAC).
LEGACY_EXPORT_FORMATS = ("x509-user-cert",)
#: Every format :func:`export_certificate` writes.
ALL_EXPORT_FORMATS = EXPORT_FORMATS + LEGACY_EXPORT_FORMATS


def export_certificate(*, certificate: Certificate, fmt: str) -> Export:
    """A certificate as PEM, DER, full chain PEM (leaf first) or certs-only PKCS#7 (PEM).

    ``x509-user-cert`` is the DER as ``application/x-x509-user-cert``: the answer the old ``<keygen>``
    (SPKAC) flow expects, which legacy browsers install next to the key they generated.
    """
    der = bytes(certificate.der)
    chain = certificate.ca.chain()
    match fmt:
        case "pem":
            return Export(pem_armor(der=der, label="CERTIFICATE"), "application/x-pem-file", "pem")
        case "der":
            return Export(der, "application/pkix-cert", "cer")
        case "x509-user-cert":
            return Export(der, "application/x-x509-user-cert", "crt")
        case "chain":
            parts = [der, *(bytes(ca.certificate_der) for ca in chain)]
            return Export(
                b"".join(pem_armor(der=p, label="CERTIFICATE") for p in parts),
                "application/x-pem-file",
                "chain.pem",
            )
        case "pkcs7":
            certs = [certificate.x509, *(ca.certificate for ca in chain)]
            return Export(
                pkcs7.serialize_certificates(certs, serialization.Encoding.PEM),
                "application/x-pkcs7-certificates",
                "p7b",
            )
    raise CAError(f"Unknown format '{fmt}'; use one of {', '.join(ALL_EXPORT_FORMATS)}.")


def ca_certificate_pem(ca: CertificateAuthority) -> bytes:
    return pem_armor(der=bytes(ca.certificate_der), label="CERTIFICATE")


def crl_pem(publication: CrlPublication) -> bytes:
    return pem_armor(der=bytes(publication.der), label="X509 CRL")
