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
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, from_core
from ca.models import (
    AuditEvent,
    BlockedKey,
    Certificate,
    CertificateAuthority,
    SerialReservation,
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
from ca.pki.spkac import check_spkac_der
from ca.services import authorities, reservations
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
#: Refusals a person reads on the portal: translated when refused, in the language of the request.
KEY_BLOCKED = _(
    "This key was reported as compromised or is known to be unsafe, so it can never be certified again. "
    "Make a new key and submit a request made from it."
)
KEY_OF_ANOTHER_ACCOUNT = _(
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
        certified = Certificate.objects.of_keys(part).values_list("spki_sha256", "owner_id").distinct()
        for spki, holder in certified:
            owners.setdefault(spki, set()).add(holder)
    refusals: list[str | None] = []
    for spki, owner_id in keys:
        if spki in blocked:
            refusals.append(str(KEY_BLOCKED))
        elif owners.get(spki, set()) - {owner_id}:
            refusals.append(str(KEY_OF_ANOTHER_ACCOUNT))
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
        self, *, parsed: _Checked, subject: SubjectInfo, profile: Profile, serial: int
    ) -> tuple[x509.Certificate, bytes]:
        """Build and sign in memory (not linted here: :func:`_lint_drafts` lints a batch at once)."""
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
        return certificate, certificate.public_bytes(serialization.Encoding.DER)

    def refuse_if_unclean(self, findings: list[pki_lint.Finding]) -> None:
        """Raise CAError naming the ERROR and FATAL findings, if there are any."""
        if (error := pki_lint.blocking_error(findings)) is not None:
            logger.error("CA %s refused to issue a certificate: %s", self.ca.slug, error)
            raise CAError(str(error)) from error


def _signer(*, ca: CertificateAuthority, validity: dt.timedelta | None, now: dt.datetime) -> _Signer:
    if (revoked := ca.revoked_in_chain()) is not None:
        raise CAError(
            f"CA '{revoked.slug}' was revoked ({revoked.get_revocation_reason_display().lower()}), so "
            f"'{ca.slug}' cannot issue. The operator must create a new issuing CA (manage.py init_ca "
            "--parent ...) and make it the default."
        )
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


@dataclass(frozen=True, slots=True)
class IssueOrder:
    """One certificate to issue: the stored request, the account's subject and owner (its serial's purpose
    is on its reservation). ``device_name`` is the owner's label, stored on the certificate's row only:
    it never goes into the certificate."""

    request_der: bytes
    subject: SubjectInfo
    owner: Account | None
    kind: str = "csr"
    profile_name: str = "client"
    device_name: str = ""


@dataclass(frozen=True, slots=True)
class Reserved:
    """Serials reserved (committed) for a batch of orders, one per order, and the window to sign with."""

    ca: CertificateAuthority
    reservations: list[SerialReservation]
    validity: dt.timedelta | None
    now: dt.datetime


def reserve(
    *,
    purposes: Sequence[str],
    ca: CertificateAuthority | None = None,
    validity: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> Reserved:
    """Step 1 of issuing: reserve one serial per purpose on ``ca`` (the default CA), committed at once.

    Must run outside any transaction (see :func:`ca.services.reservations.reserve`). Raises
    :class:`CAError` when there is no CA, its key or validity window is unusable, or a serial collides.
    """
    now = now or utcnow()
    ca = ca or authorities.default_ca()
    signer = _signer(ca=ca, validity=validity, now=now)  # the key must load before serials are spent
    rows = reservations.reserve(ca=ca, purposes=purposes, not_after=signer.not_after, now=now)
    return Reserved(ca=ca, reservations=rows, validity=validity, now=now)


def issue(
    *, orders: Sequence[IssueOrder], reserved: Reserved, actor: Account | None = None
) -> list[Certificate | str]:
    """Step 2 of issuing: per order, the stored certificate or why none was (in the caller's transaction).

    Order i uses the serial of reservation i. Each order is re-checked as at submission (request
    signature and key policy), its key must be neither blocked nor another account's (also within the
    batch), its profile must exist; then its certificate is built with the account's subject (nothing but
    the public key comes from the request: RFC 5280 leaves the subject to the CA), signed, and linted
    (pkilint, when ``settings.ENROLL_LINT_BEFORE_SIGN``): an ERROR or FATAL finding refuses it. The
    certificates that pass are inserted with one bulk INSERT; the reservations of the others are
    discarded with the reason. A problem common to all orders (unreadable CA key, expired CA) is every
    order's reason.
    """
    if len(orders) != len(reserved.reservations):
        raise ValueError("issue() needs exactly one reservation per order")
    outcomes: list[Certificate | str | None] = [None] * len(orders)
    try:
        signer = _signer(ca=reserved.ca, validity=reserved.validity, now=reserved.now)
    except CAError as exc:
        outcomes = [str(exc)] * len(orders)
    else:
        drafts = _sign_all(orders, reserved=reserved, signer=signer, outcomes=outcomes)
        if signer.lint:
            drafts = _lint_drafts(drafts, signer=signer, outcomes=outcomes)
        if drafts:
            Certificate.objects.bulk_create([draft.row for draft in drafts])
            reservations.mark_issued(
                reservations=[reserved.reservations[draft.index] for draft in drafts], now=reserved.now
            )
        for draft in drafts:
            outcomes[draft.index] = draft.row
    refused: dict[str, list[SerialReservation]] = {}
    for outcome, reservation in zip(outcomes, reserved.reservations, strict=True):
        if isinstance(outcome, str):
            refused.setdefault(outcome, []).append(reservation)
    for reason, rows in refused.items():
        reservations.discard(reservations=rows, reason=reason, now=reserved.now)
    stored = [o for o in outcomes if isinstance(o, Certificate)]
    audit.record_many(
        [audit.AuditItem(**_issued_entry(row, actor=actor)) for row in stored], now=reserved.now
    )
    if stored:
        logger.info("issued %s certificate(s) on CA %s", len(stored), reserved.ca.slug)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


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
    purpose: str = "certificate",
) -> Certificate:
    """Issue one certificate: a batch of one through :func:`reserve` and :func:`issue`.

    Must run outside any transaction (the reservation commits first). Raises :class:`CAError` with the
    reason when no certificate was issued (nothing is stored then; the reservation is discarded).
    """
    order = IssueOrder(request_der, subject, owner, kind=kind, profile_name=profile_name)
    reserved = reserve(purposes=[purpose], ca=ca, validity=validity, now=now)
    with transaction.atomic():
        (outcome,) = issue(orders=[order], reserved=reserved, actor=actor)
    if isinstance(outcome, str):
        raise CAError(outcome)
    return outcome


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


@dataclass(slots=True)
class _Draft:
    """A certificate signed in memory, not stored yet (``row`` has its serial, DER and subject)."""

    index: int
    row: Certificate


def _sign_all(
    orders: Sequence[IssueOrder],
    *,
    reserved: Reserved,
    signer: _Signer,
    outcomes: list[Certificate | str | None],
) -> list[_Draft]:
    """Re-check, refuse and sign each order with its reserved serial (not linted yet)."""
    checked: list[tuple[int, _Checked, Profile]] = []
    for index, order in enumerate(orders):
        try:
            profile = _profile(order.profile_name)
            checked.append((index, _recheck(request_der=order.request_der, kind=order.kind), profile))
        except (RequestRefused, CAError) as exc:
            outcomes[index] = str(exc)
    refusals = key_refusals(keys=[(p.spki_sha256, _owner_id(orders[i].owner)) for i, p, _profile in checked])
    claimed: dict[str, int | None] = {}  # key -> owner, for the orders of this batch
    drafts: list[_Draft] = []
    for (index, parsed, profile), refusal in zip(checked, refusals, strict=True):
        order = orders[index]
        owner_id = _owner_id(order.owner)
        if refusal is None and claimed.setdefault(parsed.spki_sha256, owner_id) != owner_id:
            refusal = str(KEY_OF_ANOTHER_ACCOUNT)
        if refusal is not None:
            outcomes[index] = refusal
            continue
        serial = reserved.reservations[index].serial
        try:
            certificate, der = signer.sign(
                parsed=parsed, subject=order.subject, profile=profile, serial=int(serial, 16)
            )
        except CAError as exc:
            outcomes[index] = str(exc)
            continue
        row = Certificate(
            ca=signer.ca,
            serial=serial,
            der=der,
            subject=certificate.subject.rfc4514_string(),
            not_before=signer.not_before,
            not_after=signer.not_after,
            owner=order.owner,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            spki_sha256=parsed.spki_sha256,
            profile=profile.name,
            request_sha256=parsed.sha256,
            created_at=reserved.now,
            device_name=order.device_name,
        )
        drafts.append(_Draft(index, row))
    return drafts


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
