"""Certificate revocation lists (RFC 5280 section 5).

A CRL here is v2 with the authorityKeyIdentifier (5.2.1, required) and a cRLNumber (5.2.3, required,
monotonically increasing per issuer). Entries carry a reasonCode (5.3.1) except for "unspecified",
which RFC 5280 says SHOULD be expressed by leaving the extension out, and an invalidityDate (5.3.2)
where the time of compromise is known.

The builder is given the whole entry list at once: appending entries one by one copies the list each
time, which is quadratic (14.5 s at 100k entries against 1.5 s). Building every entry anew is still the
slow part of a large CRL, so the next CRL can carry the entries of the previous one over as they were
parsed (:func:`previous_crl`), after checking that the previous CRL is really the issuer's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from .signing import KeyBackend, sign_crl_der


@dataclass(frozen=True, slots=True)
class CrlEntry:
    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags | None = None  # None or unspecified: no reasonCode extension
    invalidity_date: dt.datetime | None = None


def revoked_certificate(*, entry: CrlEntry) -> x509.RevokedCertificate:
    """One CRL entry with its entry extensions."""
    builder = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
    if entry.reason is not None and entry.reason is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(entry.reason), critical=False)
    if entry.invalidity_date is not None:
        builder = builder.add_extension(x509.InvalidityDate(entry.invalidity_date), critical=False)
    return builder.build()


def build_crl_der(
    *,
    issuer: x509.Certificate,
    backend: KeyBackend,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    entries: Iterable[CrlEntry],
    carried_over: Sequence[x509.RevokedCertificate] = (),
) -> bytes:
    """The DER of a complete (not delta) CRL for ``issuer``, signed through ``backend`` (the issuer's key
    wherever it lives: :func:`ca.pki.signing.sign_crl_der` builds it with a throwaway key, has ``backend``
    sign the tbsCertList and verifies the result). DER as signed: a service stores it without parsing
    and re-encoding 100,000 entries.

    ``carried_over`` are entries of the issuer's previous CRL (from :func:`previous_crl`), listed
    unchanged before ``entries``: the revokedCertificates list (5.1.2.6) of a complete CRL repeats every
    entry still due, and the order of the entries carries no meaning.
    """
    if number < 0 or number.bit_length() > 159:
        raise ValueError("a CRL number is a non-negative integer of at most 20 octets (RFC 5280 5.2.3)")
    if next_update <= this_update:
        raise ValueError("nextUpdate must be later than thisUpdate")
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=[
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid,
                False,
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            ),
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
        ],
        revoked_certificates=[*carried_over, *(revoked_certificate(entry=entry) for entry in entries)],
    )
    return sign_crl_der(builder=builder, backend=backend)


def build_crl(
    *,
    issuer: x509.Certificate,
    backend: KeyBackend,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    entries: Iterable[CrlEntry],
    carried_over: Sequence[x509.RevokedCertificate] = (),
) -> x509.CertificateRevocationList:
    """:func:`build_crl_der`, parsed (for callers that read the CRL rather than store it)."""
    der = build_crl_der(
        issuer=issuer,
        backend=backend,
        number=number,
        this_update=this_update,
        next_update=next_update,
        entries=entries,
        carried_over=carried_over,
    )
    return x509.load_der_x509_crl(der)


class PreviousCrlUnusable(ValueError):
    """The previous CRL cannot be the base of the next one; build the next one from all entries."""


@dataclass(frozen=True, slots=True)
class PreviousCrl:
    """A CRL of the issuer, checked, whose entries may be carried over into the next one."""

    crl: x509.CertificateRevocationList
    entries: list[x509.RevokedCertificate]

    def lists(self, *, serial: int) -> bool:
        """Whether the CRL has an entry for ``serial`` (a scan of the entries: for a few look-ups)."""
        return self.crl.get_revoked_certificate_by_serial_number(serial) is not None


def previous_crl(*, issuer: x509.Certificate, previous_der: bytes) -> PreviousCrl:
    """``previous_der``, a complete CRL that ``issuer`` signed, with its entries parsed to carry over.

    Raises :class:`PreviousCrlUnusable` unless the DER parses as a v2 CRL (5.1.2.1) whose issuer
    (5.1.2.3) is the issuer's subject, whose authorityKeyIdentifier (5.2.1) is the issuer's subject key
    identifier and whose signature (5.1.1.3) verifies with the issuer's public key: so a CRL of another
    CA, of a replaced CA key, or a damaged one is never carried over. The signature is checked over the
    tbsCertList bytes as stored (re-encoding 100k entries to check it would cost as much as the build).
    """
    try:
        crl = x509.load_der_x509_crl(previous_der)
        tbs = asn1_crl.CertificateList.load(previous_der)["tbs_cert_list"]
        tbs_bytes = tbs.dump()
        version = tbs["version"].native
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        hash_algorithm = crl.signature_hash_algorithm
    except (ValueError, TypeError, KeyError, x509.ExtensionNotFound, x509.UnsupportedGeneralNameType) as exc:
        raise PreviousCrlUnusable(f"the previous CRL does not parse: {exc}") from exc
    if version != "v2" or crl.issuer != issuer.subject or aki.key_identifier != ski.digest:
        raise PreviousCrlUnusable("the previous CRL is not one of this issuer's v2 CRLs")
    public_key = issuer.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
            public_key.verify(crl.signature, tbs_bytes, ec.ECDSA(hash_algorithm))
        elif (
            isinstance(public_key, rsa.RSAPublicKey)
            and hash_algorithm is not None
            and crl.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS
        ):
            public_key.verify(crl.signature, tbs_bytes, padding.PKCS1v15(), hash_algorithm)
        elif not (
            isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))
            and crl.is_signature_valid(public_key)
        ):
            raise InvalidSignature
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise PreviousCrlUnusable("the previous CRL's signature does not verify with the issuer key") from exc
    return PreviousCrl(crl=crl, entries=list(crl))
