"""What the signer re-checks before the CA key signs: it parses the to-be-signed bytes and asks the database.

The web side checks all of this too; the signer checks it again because a web worker may be the one
that is compromised. A check that fails raises :class:`Refused` with the reason. What is checked:

* a certificate (RFC 5280 4.1 TBSCertificate): issued by this CA (issuer name and authority key
  identifier), not a CA certificate, validity within ``ENROLL_CERT_VALIDITY_DAYS`` and the CA's own, with
  the notAfter its serial was reserved with; the serial reserved on this CA, still open, never stored or
  signed before; an unused issuance authorisation for it naming this key; the key policy, no blocked key
  and no key of another account; and lint (pkilint, when ``ENROLL_LINT_BEFORE_SIGN``) of the TBS wrapped
  with a throwaway signature;
* a CRL (5.1 TBSCertList): this CA's, numbered above every CRL published or signed before, with the
  configured lifetime, listing only serials this CA revoked;
* an OCSP response (RFC 6960 4.2.1 ResponseData): answered as this CA, about this CA's certificates, each
  status the database's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from django.conf import settings

from ca.models import (
    CertificateAuthority,
    ReservationState,
)
from ca.pki import keypolicy, signing
from ca.pki import lint as pki_lint
from ca.pki.errors import RequestRefused
from ca.pki.profiles import DEFAULT_BACKDATE
from ca.pki.serials import format_serial
from ca.services import issuance
from ca.services.authorisations import Unused
from ca.signer import lookups, status_checks
from ca.signer.tbs import (
    CLOCK_SLACK,
    Memory,
    Refused,
    Verdict,
    extension,
    public_key_of,
    same_issuer,
    throwaway_signature,
    wrap,
)

__all__ = [
    "CLOCK_SLACK",
    "LintRefused",
    "Memory",
    "Refused",
    "Verdict",
    "check",
    "check_certificate",
    "check_certificates",
]


@dataclass(slots=True)
class _Parsed:
    """One TBSCertificate of a batch, read: what the database checks need, and the lint copy."""

    wrapped: bytes
    certificate: x509.Certificate
    public_key: object
    serial: str
    key_digest: str = ""
    authorisation: Unused | None = None


def _wrapped(*, ca: CertificateAuthority, data: bytes, algorithm: signing.SignatureHash) -> bytes:
    """``data`` wrapped into a whole Certificate with a throwaway signature (what lint reads)."""
    try:
        fields = signing._children(data)  # TBSCertificate: [0] version, serialNumber, signature, ...
        algorithm_der = fields[2 if fields[0][0] == 0xA0 else 1]
    except (ValueError, IndexError) as exc:
        raise Refused(f"the bytes are not a TBSCertificate that can be read ({exc})") from None
    signature = throwaway_signature(ca=ca, data=data, algorithm=algorithm)
    return wrap(data, algorithm_der=algorithm_der, signature=signature)


def _parse(*, ca: CertificateAuthority, data: bytes, wrapped: bytes, now: dt.datetime) -> _Parsed:
    """The certificate ``data`` is the TBS of, checked on its own (no database): issuer, not a CA,
    validity now and within the profile's and the CA's."""
    try:
        certificate = x509.load_der_x509_certificate(wrapped)
        extensions = certificate.extensions
        public_key = certificate.public_key()
    except (ValueError, TypeError, IndexError) as exc:
        raise Refused(f"the bytes are not a TBSCertificate that can be read ({exc})") from None
    if certificate.tbs_certificate_bytes != data:
        raise Refused("the TBSCertificate is not in DER")
    same_issuer(ca=ca, issuer=certificate.issuer, aki=extension(extensions, x509.AuthorityKeyIdentifier))
    constraints = extension(extensions, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise Refused("it is a CA certificate; the signer signs client certificates only")
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    longest = dt.timedelta(days=settings.ENROLL_CERT_VALIDITY_DAYS)
    if not now - DEFAULT_BACKDATE - CLOCK_SLACK <= not_before <= now + CLOCK_SLACK:
        raise Refused(f"its notBefore {not_before:%Y-%m-%d %H:%M:%S} UTC is not now")
    if not_after > min(now + longest + CLOCK_SLACK, ca.certificate.not_valid_after_utc):
        raise Refused(
            f"its notAfter {not_after:%Y-%m-%d} is beyond the profile's {settings.ENROLL_CERT_VALIDITY_DAYS} "
            "days or the CA's own validity"
        )
    serial = format_serial(serial=certificate.serial_number)
    return _Parsed(wrapped, certificate, public_key, serial)


def _check_facts(
    item: _Parsed,
    *,
    ca: CertificateAuthority,
    facts: lookups.Facts,
    memory: Memory,
    claimed: dict[str, int | None],
) -> None:
    """The database's word on one certificate of the batch (read for the whole batch at once)."""
    serial = item.serial
    reservation = facts.reservations.get(serial)
    if reservation is None:
        raise Refused(f"serial {serial} was never reserved on CA '{ca.slug}'")
    state, reserved_not_after = reservation
    if state != ReservationState.RESERVED:
        raise Refused(f"serial {serial} is {ReservationState(state).label.lower()} already")
    if reserved_not_after != item.certificate.not_valid_after_utc:
        raise Refused(f"serial {serial} was reserved for a certificate with another notAfter")
    with memory.lock:
        signed_before = (ca.pk, serial) in memory.serials
    if signed_before or serial in facts.stored:
        raise Refused(f"serial {serial} was signed already")
    grant = facts.authorisations.get(serial)
    if grant is None:
        raise Refused(f"no issuance authorisation for serial {serial}: nobody approved it")
    key_digest = keypolicy.spki_sha256(item.public_key)  # type: ignore[arg-type]
    if grant.spki_sha256 != key_digest:
        raise Refused(f"the authorisation for serial {serial} names another key")
    try:
        keypolicy.check_public_key(public_key=item.public_key)  # type: ignore[arg-type]
    except RequestRefused as exc:
        raise Refused(f"the key breaks the key policy: {exc}") from None
    if key_digest in facts.blocked:
        raise Refused(str(issuance.KEY_BLOCKED))
    if facts.holders.get(key_digest, set()) - {grant.owner_id}:
        raise Refused(str(issuance.KEY_OF_ANOTHER_ACCOUNT))
    if claimed.setdefault(key_digest, grant.owner_id) != grant.owner_id:
        raise Refused(str(issuance.KEY_OF_ANOTHER_ACCOUNT))
    item.key_digest, item.authorisation = key_digest, grant


class LintRefused(Refused):
    """Lint refused the certificate; the text is lint's own (as a local lint refusal reads)."""


def check_certificates(
    *,
    ca: CertificateAuthority,
    items: Sequence[bytes],
    algorithm: signing.SignatureHash,
    memory: Memory,
    now: dt.datetime,
    lint: bool = False,
) -> list[Verdict | Refused]:
    """Per TBSCertificate of ``items``: the verdict, or why it is refused. All are linted together first
    (pkilint in worker processes for a large batch: :func:`ca.pki.lint.lint_many`) when ``lint`` or
    ``ENROLL_LINT_BEFORE_SIGN`` says so, so a certificate too broken to be read is refused in lint's words,
    as the web side's own lint would; then each is parsed and checked on its own, then the database is
    asked once per kind of fact for the whole batch (reservations, stored serials, authorisations, blocked
    keys, keys' holders); what is left is remembered as signed."""
    if (revoked := ca.revoked_in_chain()) is not None:
        return [Refused(f"CA '{revoked.slug}' was revoked, so '{ca.slug}' issues nothing")] * len(items)
    wrapped: list[bytes | Refused] = []
    for data in items:
        try:
            wrapped.append(_wrapped(ca=ca, data=data, algorithm=algorithm))
        except Refused as exc:
            wrapped.append(exc)
    if lint or settings.ENROLL_LINT_BEFORE_SIGN:
        waiting = [(index, der) for index, der in enumerate(wrapped) if isinstance(der, bytes)]
        findings = pki_lint.lint_many(ders=[der for _index, der in waiting])
        for (index, _der), found in zip(waiting, findings, strict=True):
            if (error := pki_lint.blocking_error(found)) is not None:
                wrapped[index] = LintRefused(str(error))
    results: list[Verdict | Refused | _Parsed] = []
    for data, der in zip(items, wrapped, strict=True):
        try:
            if isinstance(der, Refused):
                raise der
            results.append(_parse(ca=ca, data=data, wrapped=der, now=now))
        except Refused as exc:
            results.append(exc)
    parsed = [item for item in results if isinstance(item, _Parsed)]
    facts = lookups.facts(
        ca_id=ca.pk,
        serials=[item.serial for item in parsed],
        spki_digests=[keypolicy.spki_sha256(item.public_key) for item in parsed],  # type: ignore[arg-type]
    )
    claimed: dict[str, int | None] = {}
    for index, item in enumerate(results):
        if isinstance(item, _Parsed):
            try:
                _check_facts(item, ca=ca, facts=facts, memory=memory, claimed=claimed)
            except Refused as exc:
                results[index] = exc
    verdicts: list[Verdict | Refused] = []
    for item in results:
        if not isinstance(item, _Parsed):
            verdicts.append(item)
            continue
        with memory.lock:
            if (ca.pk, item.serial) in memory.serials:
                verdicts.append(Refused(f"serial {item.serial} was signed already"))
                continue
            memory.serials.add((ca.pk, item.serial))
        assert item.authorisation is not None
        approver = item.authorisation.approver_name or "the operator"
        verdicts.append(
            Verdict(
                serial=item.serial,
                authorisation=item.authorisation.pk,
                detail=f"certificate {item.certificate.subject.rfc4514_string()}, approved by {approver}",
            )
        )
    return verdicts


def check_certificate(
    *,
    ca: CertificateAuthority,
    data: bytes,
    algorithm: signing.SignatureHash,
    memory: Memory,
    now: dt.datetime,
) -> Verdict:
    """:func:`check_certificates` for one certificate: its verdict, or :class:`Refused`."""
    (verdict,) = check_certificates(ca=ca, items=[data], algorithm=algorithm, memory=memory, now=now)
    if isinstance(verdict, Refused):
        if isinstance(verdict, LintRefused):
            raise Refused(f"lint: {verdict}")
        raise verdict
    return verdict


CHECKS = {
    signing.Purpose.CERTIFICATE: check_certificate,
    signing.Purpose.CRL: status_checks.check_crl,
    signing.Purpose.OCSP_RESPONSE: status_checks.check_ocsp_response,
}


def check(
    *,
    ca: CertificateAuthority,
    purpose: signing.Purpose,
    data: bytes,
    algorithm: signing.SignatureHash,
    memory: Memory,
    now: dt.datetime,
) -> Verdict:
    """Raise :class:`Refused` unless ``data`` (a to-be-signed value of ``purpose``) may be signed for
    ``ca``; else what was checked."""
    expected = signing.signature_hash(public_key=public_key_of(ca)).name
    if algorithm.name != expected:
        raise Refused(f"CA '{ca.slug}' signs with {expected}, not {algorithm.name}")
    return CHECKS[purpose](ca=ca, data=data, algorithm=algorithm, memory=memory, now=now)
