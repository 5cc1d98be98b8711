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
import threading
from dataclasses import dataclass, field
from typing import TypeVar

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.conf import settings
from django.db.models import Max

from ca.models import (
    Certificate,
    CertificateAuthority,
    CrlPublication,
    ReservationState,
    SerialReservation,
)
from ca.pki import keypolicy, signing
from ca.pki import lint as pki_lint
from ca.pki import ocsp as pki_ocsp
from ca.pki.errors import RequestRefused
from ca.pki.profiles import DEFAULT_BACKDATE
from ca.pki.serials import format_serial
from ca.services import crl as ca_crl
from ca.services import issuance
from ca.services import ocsp as ca_ocsp
from ca.signer import lookups

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


def _wrap(tbs: bytes, *, algorithm_der: bytes, signature: bytes) -> bytes:
    """SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }: a Certificate or CertificateList."""
    return signing._tlv(0x30, tbs + algorithm_der + signing._tlv(0x03, b"\x00" + signature))


def _pub(ca: CertificateAuthority) -> signing.CAPublicKey:
    key = ca.certificate.public_key()
    if not isinstance(key, signing.CAPublicKey):
        raise Refused(f"CA '{ca.slug}' has a key that cannot sign")
    return key


def _throwaway_signature(*, ca: CertificateAuthority, data: bytes, algorithm: signing.SignatureHash) -> bytes:
    """A signature of the CA key's type over ``data`` by a throwaway key: what lint reads in its place."""
    backend = signing.PrivateKeyBackend(key=signing.throwaway_key(like=_pub(ca)))
    return backend.sign(data=data, algorithm=algorithm, purpose=signing.Purpose.CERTIFICATE)


def _same_issuer(
    *, ca: CertificateAuthority, issuer: x509.Name, aki: x509.AuthorityKeyIdentifier | None
) -> None:
    if issuer.public_bytes() != ca.certificate.subject.public_bytes():
        raise Refused(f"its issuer is '{issuer.rfc4514_string()}', not CA '{ca.slug}'")
    ski = x509.SubjectKeyIdentifier.from_public_key(_pub(ca)).digest
    if aki is not None and aki.key_identifier not in (None, ski):
        raise Refused(f"its authority key identifier is not the key of CA '{ca.slug}'")


def _extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


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
        wrapped = _wrap(
            data,
            algorithm_der=algorithm_der,
            signature=_throwaway_signature(ca=ca, data=data, algorithm=algorithm),
        )
        certificate = x509.load_der_x509_certificate(wrapped)
        extensions = certificate.extensions
        public_key = certificate.public_key()
    except (ValueError, TypeError) as exc:
        raise Refused(f"the bytes are not a TBSCertificate that can be read ({exc})") from None
    if certificate.tbs_certificate_bytes != data:
        raise Refused("the TBSCertificate is not in DER")
    _same_issuer(ca=ca, issuer=certificate.issuer, aki=_extension(extensions, x509.AuthorityKeyIdentifier))
    constraints = _extension(extensions, x509.BasicConstraints)
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


def _revoked_serials(ca: CertificateAuthority) -> set[int]:
    certificates = Certificate.objects.revoked().filter(ca=ca).values_list("serial", flat=True)
    reserved = SerialReservation.objects.filter(ca=ca, state=ReservationState.REVOKED).values_list(
        "serial", flat=True
    )
    children = ca.children.filter(revoked_at__isnull=False).values_list("serial", flat=True)
    return {
        int(s, 16) for query in (certificates, reserved, children) for s in query.iterator(chunk_size=10000)
    }


def check_crl(
    *,
    ca: CertificateAuthority,
    data: bytes,
    algorithm: signing.SignatureHash,
    memory: Memory,
    now: dt.datetime,
) -> Verdict:
    try:
        tbs = asn1_crl.TbsCertList.load(data, strict=True)
        wrapped = _wrap(data, algorithm_der=tbs["signature"].dump(), signature=b"\x00")
        crl = x509.load_der_x509_crl(wrapped)
        number_ext = _extension(crl.extensions, x509.CRLNumber)
        aki = _extension(crl.extensions, x509.AuthorityKeyIdentifier)
        serials = [revoked.serial_number for revoked in crl]
    except (ValueError, TypeError) as exc:
        raise Refused(f"the bytes are not a TBSCertList that can be read ({exc})") from None
    if crl.tbs_certlist_bytes != data:
        raise Refused("the TBSCertList is not in DER")
    _same_issuer(ca=ca, issuer=crl.issuer, aki=aki)
    if number_ext is None:
        raise Refused("the CRL has no CRL number")
    number = number_ext.crl_number
    published = CrlPublication.objects.filter(ca=ca).aggregate(highest=Max("number"))["highest"] or 0
    with memory.lock:
        signed = memory.crl_numbers.get(ca.pk, 0)
    if number <= max(published, signed):
        raise Refused(f"CRL number {number} is not above {max(published, signed)}, the last one")
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    if not now - CLOCK_SLACK <= this_update <= now + CLOCK_SLACK:
        raise Refused(f"its thisUpdate {this_update:%Y-%m-%d %H:%M:%S} UTC is not now")
    if next_update is None or next_update - this_update > ca_crl.crl_lifetime():
        raise Refused(f"its nextUpdate is not within {settings.ENROLL_CRL_LIFETIME_HOURS} hours")
    if serials:
        unknown = [s for s in serials if s not in _revoked_serials(ca)] if len(serials) < 8 else None
        if unknown is None:
            revoked = _revoked_serials(ca)
            unknown = [s for s in serials if s not in revoked]
        if unknown:
            raise Refused(
                f"it lists {len(unknown)} serial(s) CA '{ca.slug}' did not revoke, such as "
                f"{format_serial(serial=unknown[0])}"
            )
    with memory.lock:
        if number <= memory.crl_numbers.get(ca.pk, 0):
            raise Refused(f"CRL number {number} was signed already")
        memory.crl_numbers[ca.pk] = number
    return Verdict(crl_number=number, detail=f"CRL #{number} with {len(serials)} entries")


_CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {h().name: h for h in pki_ocsp.CERT_ID_HASHES}


def check_ocsp_response(
    *,
    ca: CertificateAuthority,
    data: bytes,
    algorithm: signing.SignatureHash,
    memory: Memory,
    now: dt.datetime,
) -> Verdict:
    del algorithm, memory
    try:
        tbs = asn1_ocsp.ResponseData.load(data, strict=True)
        responder = tbs["responder_id"]
        responses = list(tbs["responses"])
        parsed = [
            (
                r["cert_id"]["hash_algorithm"]["algorithm"].native,
                r["cert_id"]["issuer_name_hash"].native,
                r["cert_id"]["issuer_key_hash"].native,
                int(r["cert_id"]["serial_number"].native),
                r["cert_status"].name,
                r["cert_status"].chosen,
                r["this_update"].native,
                r["next_update"].native,
            )
            for r in responses
        ]
        responder_name, responder_value = responder.name, responder.chosen
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(f"the bytes are not an OCSP ResponseData that can be read ({exc})") from None
    if responder_name == "by_key":
        if responder_value.native != x509.SubjectKeyIdentifier.from_public_key(_pub(ca)).digest:
            raise Refused(f"the responder is not CA '{ca.slug}'")
    elif responder_value.dump() != ca.certificate.subject.public_bytes():
        raise Refused(f"the responder is not CA '{ca.slug}'")
    if not parsed:
        raise Refused("the OCSP response answers nothing")
    for hash_name, name_hash, key_hash, serial, status, chosen, this_update, next_update in parsed:
        algorithm_class = _CERT_ID_HASHES.get(hash_name)
        if algorithm_class is None:
            raise Refused(f"the CertID hash {hash_name} is not one the responder answers with")
        if (name_hash, key_hash) != pki_ocsp.issuer_hashes(
            issuer=ca.certificate, algorithm=algorithm_class()
        ):
            raise Refused(f"it answers about a certificate of another CA than '{ca.slug}'")
        state = ca_ocsp.certificate_state(ca=ca, serial=serial)
        expected = "unknown" if state is None else ("good" if state.revoked_at is None else "revoked")
        if status != expected:
            raise Refused(
                f"it says serial {format_serial(serial=serial)} is {status}; the database says {expected}"
            )
        if expected == "revoked":
            assert state is not None
            assert state.revoked_at is not None
            revoked_at = chosen["revocation_time"].native
            if revoked_at != state.revoked_at.replace(microsecond=0):
                raise Refused(f"it gives serial {format_serial(serial=serial)} another revocation time")
        if not now - CLOCK_SLACK <= this_update <= now + CLOCK_SLACK:
            raise Refused("its thisUpdate is not now")
        if next_update is None or next_update - this_update > ca_ocsp.validity():
            raise Refused(f"its nextUpdate is not within {settings.ENROLL_OCSP_VALIDITY_SECONDS} seconds")
    return Verdict(
        serial=format_serial(serial=parsed[0][3]), detail=f"OCSP response ({len(parsed)} answer(s))"
    )


CHECKS = {
    signing.Purpose.CERTIFICATE: check_certificate,
    signing.Purpose.CRL: check_crl,
    signing.Purpose.OCSP_RESPONSE: check_ocsp_response,
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
    expected = signing.signature_hash(public_key=_pub(ca)).name
    if algorithm.name != expected:
        raise Refused(f"CA '{ca.slug}' signs with {expected}, not {algorithm.name}")
    return CHECKS[purpose](ca=ca, data=data, algorithm=algorithm, memory=memory, now=now)
