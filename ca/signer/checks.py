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

from asn1crypto import x509 as asn1_x509
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

__all__ = ["CLOCK_SLACK", "Memory", "Refused", "Verdict", "check", "check_certificate"]


def check_certificate(
    *,
    ca: CertificateAuthority,
    data: bytes,
    algorithm: signing.SignatureHash,
    memory: Memory,
    now: dt.datetime,
) -> Verdict:
    try:
        tbs = asn1_x509.TbsCertificate.load(data, strict=True)
        algorithm_der = tbs["signature"].dump()
        wrapped = wrap(
            data,
            algorithm_der=algorithm_der,
            signature=throwaway_signature(ca=ca, data=data, algorithm=algorithm),
        )
        certificate = x509.load_der_x509_certificate(wrapped)
        extensions = certificate.extensions
        public_key = certificate.public_key()
    except (ValueError, TypeError) as exc:
        raise Refused(f"the bytes are not a TBSCertificate that can be read ({exc})") from None
    if certificate.tbs_certificate_bytes != data:
        raise Refused("the TBSCertificate is not in DER")
    same_issuer(ca=ca, issuer=certificate.issuer, aki=extension(extensions, x509.AuthorityKeyIdentifier))
    constraints = extension(extensions, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise Refused("it is a CA certificate; the signer signs client certificates only")
    serial = format_serial(serial=certificate.serial_number)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    longest = dt.timedelta(days=settings.ENROLL_CERT_VALIDITY_DAYS)
    if (revoked := ca.revoked_in_chain()) is not None:
        raise Refused(f"CA '{revoked.slug}' was revoked, so '{ca.slug}' issues nothing")
    if not now - DEFAULT_BACKDATE - CLOCK_SLACK <= not_before <= now + CLOCK_SLACK:
        raise Refused(f"its notBefore {not_before:%Y-%m-%d %H:%M:%S} UTC is not now")
    if not_after > min(now + longest + CLOCK_SLACK, ca.certificate.not_valid_after_utc):
        raise Refused(
            f"its notAfter {not_after:%Y-%m-%d} is beyond the profile's {settings.ENROLL_CERT_VALIDITY_DAYS} "
            "days or the CA's own validity"
        )
    reservation = lookups.reservation(ca_id=ca.pk, serial=serial, not_after=not_after)
    if reservation is None:
        raise Refused(f"serial {serial} was never reserved on CA '{ca.slug}'")
    state, same_not_after = reservation
    if state != ReservationState.RESERVED:
        raise Refused(f"serial {serial} is {ReservationState(state).label.lower()} already")
    if not same_not_after:
        raise Refused(f"serial {serial} was reserved for a certificate with another notAfter")
    with memory.lock:
        signed_before = (ca.pk, serial) in memory.serials
    if signed_before or lookups.stored(ca_id=ca.pk, serial=serial):
        raise Refused(f"serial {serial} was signed already")
    grant = lookups.unused_authorisation(ca_id=ca.pk, serial=serial)
    if grant is None:
        raise Refused(f"no issuance authorisation for serial {serial}: nobody approved it")
    key_digest = keypolicy.spki_sha256(public_key)
    if grant.spki_sha256 != key_digest:
        raise Refused(f"the authorisation for serial {serial} names another key")
    try:
        keypolicy.check_public_key(public_key=public_key)
    except RequestRefused as exc:
        raise Refused(f"the key breaks the key policy: {exc}") from None
    if lookups.blocked(spki_sha256=key_digest):
        raise Refused(str(issuance.KEY_BLOCKED))
    if lookups.of_another_account(spki_sha256=key_digest, owner_id=grant.owner_id):
        raise Refused(str(issuance.KEY_OF_ANOTHER_ACCOUNT))
    lint = pki_lint.lint_certificate(der=wrapped) if settings.ENROLL_LINT_BEFORE_SIGN else []
    if (error := pki_lint.blocking_error(lint)) is not None:
        raise Refused(f"lint: {error}")
    with memory.lock:
        if (ca.pk, serial) in memory.serials:
            raise Refused(f"serial {serial} was signed already")
        memory.serials.add((ca.pk, serial))
    approver = grant.approver_name or "the operator"
    return Verdict(
        serial=serial,
        authorisation=grant.pk,
        detail=f"certificate {certificate.subject.rfc4514_string()}, approved by {approver}",
    )


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
