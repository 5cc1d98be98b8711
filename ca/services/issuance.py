"""Issuing certificates: re-check a stored request, refuse blocked keys and keys of other accounts, draft,
lint, sign through the CA's key backend, verify, store.

The CA key signs only certificates that passed every check: each certificate is first drafted with a
throwaway key (:func:`ca.pki.signing.draft_certificate`: its to-be-signed bytes, with the reserved serial,
are final), the drafts of a batch are linted at once, and only the clean ones are signed by the key backend
(:func:`ca.pki.signing.finish_certificate`, which verifies each signature with the CA's public key). Lint
runs once, where the key is: a backend that lints before it signs (the signer,
:attr:`ca.signer.client.SignerBackend.lints_before_signing`) gets the whole batch in one exchange and lints
it there, and a draft it refuses gets its reason exactly as a local lint refusal. So a
refused certificate costs no CA signature and uses up no serial: its reservation is discarded with the
reason, and a discarded reservation is a serial that no CA signature ever carried (nothing to revoke,
nothing for the CRL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from django.conf import settings
from django.db import connections, router, transaction
from django.utils.translation import gettext_lazy as _

from ca import audit
from ca.clock import utcnow
from ca.errors import CAError, KeyUnavailable, from_core
from ca.models import (
    AuditEvent,
    BlockedKey,
    Certificate,
    CertificateAuthority,
    SerialReservation,
)
from ca.pki import lint as pki_lint
from ca.pki.csr import check_csr_der
from ca.pki.errors import CAKeyError, KeyUnavailableError, RequestRefused
from ca.pki.profiles import (
    IssuerUrls,
    Profile,
    SubjectInfo,
    client_certificate_builder,
    get_profile,
    validity_window,
)
from ca.pki.signing import (
    CAPublicKey,
    KeyBackend,
    certified_public_key,
    draft_certificate,
    finish_certificate,
    finish_certificates,
    lints_before_signing,
)
from ca.pki.spkac import check_spkac_der
from ca.services import authorisations, authorities, keys, reservations
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
        for spki, holder, is_blocked in _key_facts(digests[start : start + _IN_CHUNK]):
            if is_blocked:
                blocked.add(spki)
            else:
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


def _key_facts(digests: Sequence[str]) -> list[tuple[str, int | None, int]]:
    """(SPKI SHA-256, owner id, 1) for each of ``digests`` that is blocked, (SPKI SHA-256, owner id, 0) for
    each owner of a certificate of one: one statement for both tables.

    Written out rather than built by the ORM (two querysets and a union): it runs for every certificate
    issued, twice for a device's enrollment, and Django's query building cost more than the query. The
    same lookups as ``BlockedKey.objects.filter(spki_sha256__in=...)`` and
    ``Certificate.objects.of_keys(...)``; both columns are indexed."""
    if not digests:
        return []
    connection = connections[router.db_for_read(Certificate)]
    quote = connection.ops.quote_name
    column = quote("spki_sha256")
    places = ", ".join(["%s"] * len(digests))
    blocked_table = quote(BlockedKey._meta.db_table)
    certificates = quote(Certificate._meta.db_table)
    owner = quote(Certificate._meta.get_field("owner").column)
    sql = (
        f"SELECT {column}, NULL, 1 FROM {blocked_table} WHERE {column} IN ({places}) "  # noqa: S608
        f"UNION SELECT {column}, {owner}, 0 FROM {certificates} WHERE {column} IN ({places})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*digests, *digests])
        return [(str(spki), holder, int(flag)) for spki, holder, flag in cursor.fetchall()]


def key_refusal(*, spki_sha256: str, owner: Account | None) -> str | None:
    """Why no certificate may be issued for this key to ``owner`` (see :func:`key_refusals`), or None."""
    return key_refusals(keys=[(spki_sha256, _owner_id(owner))])[0]


def _owner_id(owner: Account | None) -> int | None:
    return owner.pk if owner is not None else None


@dataclass(frozen=True, slots=True)
class _Signer:
    """What signing needs that is the same for every certificate of one issuance (one or a batch)."""

    ca: CertificateAuthority
    backend: KeyBackend
    public_key: CAPublicKey  # the CA certificate's, which the backend's key must be
    not_before: dt.datetime
    not_after: dt.datetime
    urls: IssuerUrls
    lint: bool

    def draft(
        self, *, parsed: _Checked, subject: SubjectInfo, profile: Profile, serial: int
    ) -> x509.Certificate:
        """The certificate with its final TBS bytes, signed by a throwaway key only (the CA key is not used:
        :func:`_lint_drafts` lints a batch of drafts at once, then :meth:`finish` signs the clean ones)."""
        with from_core():
            builder = client_certificate_builder(
                profile=profile,
                public_key=parsed.public_key,
                subject=subject,
                issuer=self.ca.certificate,
                serial=serial,
                not_before=self.not_before,
                not_after=self.not_after,
                urls=self.urls,
            )
            return draft_certificate(builder=builder, like=self.public_key)

    def finish(self, draft: x509.Certificate) -> x509.Certificate:
        """The draft's TBS signed by the CA's key backend, verified with the CA's public key (raises
        :class:`ca.pki.errors.CAKeyError` when the key cannot sign or its signature does not verify)."""
        return finish_certificate(draft=draft, backend=self.backend)

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
        backend = keys.key_backend(ca)
        public_key = certified_public_key(backend=backend, certificate=ca.certificate)
        not_before, not_after = validity_window(
            now=now,
            validity=validity or dt.timedelta(days=settings.ENROLL_CERT_VALIDITY_DAYS),
            issuer=ca.certificate,
        )
    return _Signer(
        ca=ca,
        backend=backend,
        public_key=public_key,
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
    """Serials reserved (committed) for a batch of orders, one per order, and the window to sign with;
    ``prepared``: what :func:`prepare` did for some of them before the issuing transaction, by serial."""

    ca: CertificateAuthority
    reservations: list[SerialReservation]
    validity: dt.timedelta | None
    now: dt.datetime
    prepared: Mapping[str, _Prepared] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One order as :func:`prepare` left it: refused for what it is (``refusal``: its request or profile),
    or drafted with its reserved serial (``certificate``, signed by a throwaway key only), and linted when
    ``linted`` (``lint_refusal``: why lint refused it, or None). Nothing here depends on the database:
    :func:`issue` uses it for the same order only, and checks everything else again."""

    order: IssueOrder
    refusal: str | None = None
    parsed: _Checked | None = None
    profile: Profile | None = None
    certificate: x509.Certificate | None = None
    linted: bool = False
    lint_refusal: str | None = None

    def fits(self, order: IssueOrder, signer: _Signer) -> bool:
        """Made for this very order (request, subject, owner, format, profile) and signing window."""
        if _identity(self.order) != _identity(order):
            return False
        draft = self.certificate
        return draft is None or (
            draft.not_valid_before_utc == signer.not_before
            and draft.not_valid_after_utc == signer.not_after
            and draft.issuer == signer.ca.certificate.subject
        )


def _identity(order: IssueOrder) -> tuple[bytes, SubjectInfo, int | None, str, str]:
    """What an order's certificate is made of (its device name is on the certificate's row only)."""
    return (order.request_der, order.subject, _owner_id(order.owner), order.kind, order.profile_name)


def reserve(
    *,
    purposes: Sequence[str],
    ca: CertificateAuthority | None = None,
    validity: dt.timedelta | None = None,
    now: dt.datetime | None = None,
    approval: authorisations.Approval | None = None,
) -> Reserved:
    """Step 1 of issuing: reserve one serial per purpose on ``ca`` (the default CA), committed at once,
    with ``approval``'s issuance authorisation for each (one approved request per purpose, in order) in
    the same transaction.

    Must run outside any transaction (see :func:`ca.services.reservations.reserve`). Raises
    :class:`CAError` when there is no CA, its key or validity window is unusable, or a serial collides.
    A CA that was rolled over issues through its newest key generation (:mod:`ca.services.rollover`).
    """
    now = now or utcnow()
    ca = (ca or authorities.default_ca()).newest_generation()
    signer = _signer(ca=ca, validity=validity, now=now)  # the key must load before serials are spent
    then = None
    if approval is not None:
        if len(approval.requests) != len(purposes):
            raise ValueError("reserve() needs one approved request per purpose")

        def then(rows: list[SerialReservation]) -> None:
            authorisations.write(ca=ca, approval=approval, reservations=rows, now=now)

    rows = reservations.reserve(ca=ca, purposes=purposes, not_after=signer.not_after, now=now, then=then)
    return Reserved(ca=ca, reservations=rows, validity=validity, now=now)


def prepare(*, orders: Sequence[IssueOrder], reserved: Reserved) -> Reserved:
    """Step 1b of issuing, before the issuing transaction (so outside its write lock): re-check each order's
    request, draft its certificate with its reserved serial and lint the drafts (where lint runs in this
    process), exactly as :func:`issue` would; ``reserved`` with the results, which :func:`issue` then uses
    for the same orders instead of doing that work again inside the transaction.

    Optional: :func:`issue` does all of it for an order without a fitting result (another request, subject
    or owner; another signing window). Nothing here reads a fact that can change meanwhile: whether the
    key is blocked or another account's, whether the CA was revoked and whether its key can sign are
    checked by :func:`issue` inside the transaction, as ever. A problem common to all orders (no usable
    CA key, a revoked CA) leaves ``reserved`` as it was, for :func:`issue` to meet and report.
    """
    if len(orders) != len(reserved.reservations):
        raise ValueError("prepare() needs exactly one reservation per order")
    try:
        signer = _signer(ca=reserved.ca, validity=reserved.validity, now=reserved.now)
    except CAError:
        return reserved
    prepared: dict[str, _Prepared] = dict(reserved.prepared)
    drafts: list[_Draft] = []
    for index, (order, reservation) in enumerate(zip(orders, reserved.reservations, strict=True)):
        try:
            profile = _profile(order.profile_name)
            parsed = _recheck(request_der=order.request_der, kind=order.kind)
            certificate = signer.draft(
                parsed=parsed, subject=order.subject, profile=profile, serial=int(reservation.serial, 16)
            )
        except (RequestRefused, CAError) as exc:
            prepared[reservation.serial] = _Prepared(order, refusal=str(exc))
            continue
        drafts.append(_Draft(index, certificate, order, parsed, profile, reservation.serial))
    lint_here = signer.lint and not lints_before_signing(signer.backend)
    refusals: list[Certificate | str | None] = [None] * len(orders)
    if lint_here:
        _lint_drafts(drafts, signer=signer, outcomes=refusals)
    for draft in drafts:
        refusal = refusals[draft.index]
        prepared[draft.serial] = _Prepared(
            draft.order,
            parsed=draft.parsed,
            profile=draft.profile,
            certificate=draft.certificate,
            linted=lint_here,
            lint_refusal=refusal if isinstance(refusal, str) else None,
        )
    return replace(reserved, prepared=prepared)


def issue(
    *, orders: Sequence[IssueOrder], reserved: Reserved, actor: Account | None = None
) -> list[Certificate | str]:
    """Step 2 of issuing: per order, the stored certificate or why none was (in the caller's transaction).

    Order i uses the serial of reservation i. Each order is re-checked as at submission (request
    signature and key policy), its key must be neither blocked nor another account's (also within the
    batch), its profile must exist; then its certificate is drafted with the account's subject (nothing
    but the public key comes from the request: RFC 5280 leaves the subject to the CA) and the reserved
    serial, signed by a throwaway key, and linted (pkilint, when ``settings.ENROLL_LINT_BEFORE_SIGN``): an
    ERROR or FATAL finding refuses it. Only then does the CA's key backend sign the clean drafts' TBS
    bytes; each result is verified with the CA's public key, and they are inserted with one bulk INSERT.

    A refused order costs no CA signature and uses up no serial: its reservation is discarded with the
    reason (the serial was never on anything the CA key signed, so it is never revoked nor listed on a
    CRL). A problem common to all orders (unusable CA key, expired CA) is every order's reason. When the
    key backend fails while signing (token gone, wrong PIN, a signature that does not verify), nothing of
    the batch is stored and that failure is the reason of every order not refused on its own; serials
    the CA key did sign before the failure keep their reservation open, as after a crash between
    signing and storing (reported after 10 minutes, revocable by serial), so no CA-signed serial is ever
    marked discarded. A key that cannot sign at all (token missing, wrong PIN, the signer not running:
    :class:`ca.errors.KeyUnavailable`) is raised instead, so that the caller changes nothing; its ``unused``
    are the reservations the caller discards once its transaction rolled back.

    What :func:`prepare` did before the transaction for an order (re-check, draft, lint) is not done again;
    everything that reads the database or the key is.
    """
    if len(orders) != len(reserved.reservations):
        raise ValueError("issue() needs exactly one reservation per order")
    outcomes: list[Certificate | str | None] = [None] * len(orders)
    signed_unstored: set[int] = set()  # orders whose serial the CA key signed, in a batch that failed
    try:
        signer = _signer(ca=reserved.ca, validity=reserved.validity, now=reserved.now)
    except KeyUnavailable as exc:
        raise KeyUnavailable(str(exc), unused=reserved.reservations) from exc
    except CAError as exc:
        outcomes = [str(exc)] * len(orders)
    else:
        drafts = _draft_all(orders, reserved=reserved, signer=signer, outcomes=outcomes)
        if signer.lint and not lints_before_signing(signer.backend):
            drafts = _lint_drafts(drafts, signer=signer, outcomes=outcomes)
        try:
            drafts = _sign_drafts(drafts, signer=signer, now=reserved.now, outcomes=outcomes)
        except CAKeyError as exc:
            logger.error("CA %s could not sign: %s", signer.ca.slug, exc)
            signed_unstored = {draft.index for draft in drafts if draft.signed}
            if isinstance(exc, KeyUnavailableError):
                unused = [r for i, r in enumerate(reserved.reservations) if i not in signed_unstored]
                raise KeyUnavailable(str(exc), unused=unused) from exc
            for draft in drafts:
                outcomes[draft.index] = str(exc)
            drafts = []
        rows = [draft.row for draft in drafts if draft.row is not None]
        if rows:
            Certificate.objects.bulk_create(rows)
            reservations.mark_issued(
                reservations=[reserved.reservations[draft.index] for draft in drafts], now=reserved.now
            )
        for draft, row in zip(drafts, rows, strict=True):
            outcomes[draft.index] = row
    refused: dict[str, list[SerialReservation]] = {}
    for index, (outcome, reservation) in enumerate(zip(outcomes, reserved.reservations, strict=True)):
        if isinstance(outcome, str) and index not in signed_unstored:
            refused.setdefault(outcome, []).append(reservation)
    for reason, unused in refused.items():
        reservations.discard(reservations=unused, reason=reason, now=reserved.now)
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
    """A certificate of one order, not stored yet: the throwaway-signed draft (final TBS bytes, what lint
    reads) until the CA key signed it, then the final certificate and the row to insert."""

    index: int
    certificate: x509.Certificate
    order: IssueOrder
    parsed: _Checked
    profile: Profile
    serial: str
    row: Certificate | None = None  # set once the CA key signed
    sent: bool = False  # in a batch sent to the backend that failed: maybe signed, never assumed unsigned
    linted: bool = False  # linted before the transaction (:func:`prepare`), with this outcome:
    lint_refusal: str | None = None

    @property
    def signed(self) -> bool:
        return self.row is not None or self.sent


def _draft_all(
    orders: Sequence[IssueOrder],
    *,
    reserved: Reserved,
    signer: _Signer,
    outcomes: list[Certificate | str | None],
) -> list[_Draft]:
    """Re-check and refuse each order, and draft the certificate of each one left with its reserved serial
    (signed by the throwaway key only; not linted yet), or take both from :func:`prepare`."""
    checked: list[tuple[int, _Checked, Profile]] = []
    earlier: dict[int, _Prepared] = {}
    for index, order in enumerate(orders):
        found = reserved.prepared.get(reserved.reservations[index].serial)
        if found is not None and found.fits(order, signer):
            if found.parsed is None or found.profile is None:
                outcomes[index] = found.refusal or "refused"
                continue
            earlier[index] = found
            checked.append((index, found.parsed, found.profile))
            continue
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
        if (made := earlier.get(index)) is not None and made.certificate is not None:
            drafts.append(
                _Draft(index, made.certificate, order, parsed, profile, serial, linted=made.linted,
                       lint_refusal=made.lint_refusal)
            )  # fmt: skip
            continue
        try:
            draft = signer.draft(
                parsed=parsed, subject=order.subject, profile=profile, serial=int(serial, 16)
            )
        except CAError as exc:
            outcomes[index] = str(exc)
            continue
        drafts.append(_Draft(index, draft, order, parsed, profile, serial))
    return drafts


def _lint_drafts(
    drafts: list[_Draft], *, signer: _Signer, outcomes: list[Certificate | str | None]
) -> list[_Draft]:
    """The drafts that lint clean (all linted at once, in worker processes for a large batch); the reason
    of each other one goes into ``outcomes``. The CA key has signed none of them yet: a refused draft
    carries only the throwaway key's signature and is dropped."""
    refusals: dict[int, str] = {d.index: d.lint_refusal for d in drafts if d.lint_refusal is not None}
    unlinted = [draft for draft in drafts if not draft.linted]
    ders = [draft.certificate.public_bytes(serialization.Encoding.DER) for draft in unlinted]
    for draft, findings in zip(unlinted, pki_lint.lint_many(ders=ders), strict=True):
        try:
            signer.refuse_if_unclean(findings)
        except CAError as exc:
            refusals[draft.index] = str(exc)
    for index, reason in refusals.items():
        outcomes[index] = reason
    return [draft for draft in drafts if draft.index not in refusals]


def _sign_drafts(
    drafts: list[_Draft], *, signer: _Signer, now: dt.datetime, outcomes: list[Certificate | str | None]
) -> list[_Draft]:
    """Have the CA's key backend sign each draft's TBS bytes (verified with the CA's public key) and make
    its row: the drafts signed, in order. A backend that signs batches (the signer) gets them all in one
    exchange, with lint when ``signer.lint``, and a draft it refuses gets its reason in ``outcomes``; any
    other backend signs one after the other. Raises :class:`ca.pki.errors.CAKeyError` when a signature
    fails (the drafts signed before it have their row set; a batch that failed has each draft ``sent``)."""
    if hasattr(signer.backend, "sign_many"):
        try:
            results = finish_certificates(
                drafts=[draft.certificate for draft in drafts], backend=signer.backend, lint=signer.lint
            )
        except CAKeyError as exc:
            # a backend that cannot sign at all signed none of the batch; after any other failure
            # (a broken-off answer, a signature that does not verify) each may have been signed
            for draft in drafts:
                draft.sent = not isinstance(exc, KeyUnavailableError)
            raise
        finished: list[_Draft] = []
        for draft, result in zip(drafts, results, strict=True):
            if isinstance(result, str):
                logger.error("CA %s refused to issue a certificate: %s", signer.ca.slug, result)
                outcomes[draft.index] = result
                continue
            _make_row(draft, result, signer=signer, now=now)
            finished.append(draft)
        return finished
    for draft in drafts:
        _make_row(draft, signer.finish(draft.certificate), signer=signer, now=now)
    return drafts


def _make_row(draft: _Draft, certificate: x509.Certificate, *, signer: _Signer, now: dt.datetime) -> None:
    """Set the draft's final certificate and the row to insert for it."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    draft.certificate = certificate
    draft.row = Certificate(
        ca=signer.ca,
        serial=draft.serial,
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
        device_name=draft.order.device_name,
    )
