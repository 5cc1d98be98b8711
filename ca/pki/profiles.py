"""Certificate profiles: what goes into the certificates this CA signs.

End-entity profile ``client`` (TLS client authentication), per RFC 5280 section 4.2:
- basicConstraints cA=FALSE, critical (4.2.1.9);
- keyUsage digitalSignature, critical (4.2.1.3): TLS 1.2/1.3 client keys sign the handshake;
- extendedKeyUsage id-kp-clientAuth (4.2.1.12);
- subjectKeyIdentifier (4.2.1.2) and authorityKeyIdentifier keyIdentifier (4.2.1.1);
- cRLDistributionPoints with the HTTP URL of the issuer's DER CRL (4.2.1.13; RFC 5280 8: HTTP URIs
  point at DER);
- authorityInfoAccess caIssuers with the URL of the issuer certificate (4.2.2.1) and, where set, OCSP;
- subjectAltName rfc822Name with the account's verified e-mail address (4.2.1.6), when there is one.

The subject is built from the account (CN = username, O from settings), never from the request. No
extension of the request is ever copied. notBefore is backdated a little for clients with slow clocks;
notAfter never passes the issuer's own notAfter (a certificate must not outlive its issuer).

This module only builds: each ``*_builder`` function returns the ``CertificateBuilder`` with every field
and extension, and the CA key never touches it. Signing goes through :mod:`ca.pki.signing` (a throwaway
key gives the to-be-signed bytes, the key backend signs them, the result is verified), so a CA key in a
token or a signer process signs exactly like a key file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from .keys import CAPrivateKey
from .signing import CAPublicKey, KeyBackend, PrivateKeyBackend, sign_certificate

#: RFC 5280 appendix A.1 upper bounds.
UB_COMMON_NAME = 64
UB_ORGANIZATION = 64

DEFAULT_BACKDATE = dt.timedelta(minutes=5)


class ProfileError(ValueError):
    """A certificate cannot be built as asked (unknown profile, subject too long, CA expired...)."""


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """The account facts a subject is built from."""

    common_name: str
    organization: str | None = None
    email: str | None = None  # a verified address, or None


@dataclass(frozen=True, slots=True)
class IssuerUrls:
    """Where relying parties find the issuer's CRL, certificate and (optionally) OCSP responder."""

    crl_url: str
    ca_issuers_url: str
    ocsp_url: str | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    extended_key_usages: tuple[x509.ObjectIdentifier, ...]
    default_validity: dt.timedelta


PROFILES: dict[str, Profile] = {
    "client": Profile(
        name="client",
        extended_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        default_validity=dt.timedelta(days=365),
    ),
}


#: RFC 5280 4.2.1.3: a CA certificate's key signs certificates and CRLs, nothing else (critical).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def get_profile(*, name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"There is no certificate profile named '{name}'.") from None


def _name_attribute(oid: x509.ObjectIdentifier, value: str, bound: int, what: str) -> x509.NameAttribute[str]:
    if not value or len(value) > bound:
        raise ProfileError(f"The {what} must be 1 to {bound} characters long; '{value[:80]}' is not.")
    return x509.NameAttribute(oid, value)


def build_subject(*, info: SubjectInfo) -> x509.Name:
    """The subject DN from account facts: O (if configured) then CN, both UTF8String."""
    attributes: list[x509.NameAttribute[str]] = []
    if info.organization:
        attributes.append(
            _name_attribute(NameOID.ORGANIZATION_NAME, info.organization, UB_ORGANIZATION, "organization")
        )
    attributes.append(_name_attribute(NameOID.COMMON_NAME, info.common_name, UB_COMMON_NAME, "user name"))
    return x509.Name(attributes)


def issuer_extensions(
    builder: x509.CertificateBuilder, *, issuer: x509.Certificate, urls: IssuerUrls
) -> x509.CertificateBuilder:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    access = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(urls.ca_issuers_url)
        )
    ]
    if urls.ocsp_url:
        access.insert(
            0,
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp_url)
            ),
        )
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return (
        builder.add_extension(aki, critical=False)
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(urls.crl_url)], None, None, None)]
            ),
            critical=False,
        )
        .add_extension(x509.AuthorityInformationAccess(access), critical=False)
    )


def validity_window(
    *,
    now: dt.datetime,
    validity: dt.timedelta,
    issuer: x509.Certificate,
    backdate: dt.timedelta = DEFAULT_BACKDATE,
) -> tuple[dt.datetime, dt.datetime]:
    """notBefore = now - backdate; notAfter = now + validity, capped at the issuer's notAfter."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    not_before = (now - backdate).replace(microsecond=0)
    not_after = min(now + validity, issuer.not_valid_after_utc).replace(microsecond=0)
    if not_after <= now:
        raise ProfileError("The CA certificate has expired; renew the CA before issuing certificates.")
    return not_before, not_after


def client_certificate_builder(
    *,
    profile: Profile,
    public_key: CertificatePublicKeyTypes,
    subject: SubjectInfo,
    issuer: x509.Certificate,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    urls: IssuerUrls,
) -> x509.CertificateBuilder:
    """An end-entity certificate with exactly the profile's extensions, ready to be signed."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(build_subject(info=subject))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(profile.extended_key_usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    builder = issuer_extensions(builder, issuer=issuer, urls=urls)
    if subject.email and subject.email.isascii():
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(subject.email)]), critical=False
        )
    return builder


def build_client_certificate(
    *,
    profile: Profile,
    public_key: CertificatePublicKeyTypes,
    subject: SubjectInfo,
    issuer: x509.Certificate,
    backend: KeyBackend,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    urls: IssuerUrls,
) -> x509.Certificate:
    """An end-entity certificate (:func:`client_certificate_builder`) signed through ``backend``
    (:func:`ca.pki.signing.sign_certificate`). Issuance drafts and lints a batch first instead."""
    builder = client_certificate_builder(
        profile=profile,
        public_key=public_key,
        subject=subject,
        issuer=issuer,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        urls=urls,
    )
    return sign_certificate(builder=builder, backend=backend)


def build_ca_name(*, common_name: str, organization: str | None) -> x509.Name:
    return build_subject(info=SubjectInfo(common_name=common_name, organization=organization))


def ca_certificate_builder(
    *,
    subject: x509.Name,
    public_key: CAPublicKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer: x509.Certificate | None = None,
    issuer_urls: IssuerUrls | None = None,
) -> x509.CertificateBuilder:
    """A root (self-signed, no path length limit) or an intermediate (pathLenConstraint 0) CA certificate
    for ``public_key``, ready to be signed by the root's own key or by ``issuer``'s key.

    RFC 5280 4.2.1.9: cA=TRUE, critical; 4.2.1.3: keyCertSign and cRLSign, critical.
    An intermediate also carries the parent's CRL distribution point and caIssuers URL.
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True
        )
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    if issuer is None:
        return builder.issuer_name(subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    if issuer_urls is None:
        raise ValueError("an intermediate needs its issuer's URLs")
    return issuer_extensions(builder.issuer_name(issuer.subject), issuer=issuer, urls=issuer_urls)


def build_ca_certificate(
    *,
    subject: x509.Name,
    key: CAPrivateKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer: x509.Certificate | None = None,
    issuer_key: CAPrivateKey | None = None,
    issuer_urls: IssuerUrls | None = None,
) -> x509.Certificate:
    """:func:`ca_certificate_builder` for ``key``, signed through :class:`ca.pki.signing.PrivateKeyBackend`
    with ``key`` itself (a root) or ``issuer_key`` (an intermediate): for callers that hold key files."""
    if issuer is not None and (issuer_key is None or issuer_urls is None):
        raise ValueError("an intermediate needs its issuer's key and URLs")
    builder = ca_certificate_builder(
        subject=subject,
        public_key=key.public_key(),
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        issuer=issuer,
        issuer_urls=issuer_urls,
    )
    signer = key if issuer_key is None or issuer is None else issuer_key
    return sign_certificate(builder=builder, backend=PrivateKeyBackend(key=signer))
