"""The signer's checks of what says whether a certificate is revoked: CRLs (RFC 5280 5.1 TBSCertList) and
OCSP responses (RFC 6960 4.2.1 ResponseData), against the database (:mod:`ca.signer.checks`)."""

from __future__ import annotations

import datetime as dt

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.conf import settings
from django.db.models import Max

from ca.models import Certificate, CertificateAuthority, CrlPublication, ReservationState, SerialReservation
from ca.pki import ocsp as pki_ocsp
from ca.pki import signing
from ca.pki.serials import format_serial
from ca.services import crl as ca_crl
from ca.services import ocsp as ca_ocsp
from ca.signer.tbs import CLOCK_SLACK, Memory, Refused, Verdict, extension, public_key_of, same_issuer, wrap


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
        wrapped = wrap(data, algorithm_der=tbs["signature"].dump(), signature=b"\x00")
        crl = x509.load_der_x509_crl(wrapped)
        number_ext = extension(crl.extensions, x509.CRLNumber)
        aki = extension(crl.extensions, x509.AuthorityKeyIdentifier)
        serials = [revoked.serial_number for revoked in crl]
    except (ValueError, TypeError) as exc:
        raise Refused(f"the bytes are not a TBSCertList that can be read ({exc})") from None
    if crl.tbs_certlist_bytes != data:
        raise Refused("the TBSCertList is not in DER")
    same_issuer(ca=ca, issuer=crl.issuer, aki=aki)
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
        if responder_value.native != x509.SubjectKeyIdentifier.from_public_key(public_key_of(ca)).digest:
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
