"""Issuing certificates: re-check a stored request, refuse blocked keys and keys of other accounts, sign."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from django.conf import settings
from django.db import IntegrityError, transaction

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import (
    AuditEvent,
    BlockedKey,
    Certificate,
    CertificateAuthority,
)
from ca.pki import keys as pki_keys
from ca.pki import lint as pki_lint
from ca.pki.csr import check_csr_der
from ca.pki.errors import RequestRefused
from ca.pki.profiles import (
    IssuerUrls,
    Profile,
    SubjectInfo,
    build_client_certificate,
    get_profile,
    validity_window,
)
from ca.pki.serials import format_serial, new_serial
from ca.pki.spkac import check_spkac_der
from ca.services import authorities
from ca.services.keys import load_key
from ca.types import Account

logger = logging.getLogger(__name__)


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
        with from_core():
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
    with from_core():
        key = load_key(ca)
        not_before, not_after = validity_window(
            now=now,
            validity=validity or dt.timedelta(days=settings.ENROLL_CERT_VALIDITY_DAYS),
            issuer=ca.certificate,
        )
    return _Signer(
        ca=ca,
        key=key,
        not_before=not_before,
        not_after=not_after,
        urls=ca.urls,
        lint=bool(settings.ENROLL_LINT_BEFORE_SIGN),
    )


def _profile(name: str) -> Profile:
    with from_core():
        return get_profile(name=name)


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
        ca=ca or authorities.default_ca(),
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
        row.fingerprint_sha256 = hashlib.sha256(der).hexdigest()
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
        signer = _signer(ca=ca or authorities.default_ca(), validity=validity, now=now)
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
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
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
