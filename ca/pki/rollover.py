"""Link certificates between two key generations of one CA (RFC 4210 section 4.4, "root CA key update").

When a CA's key is replaced, the CA issues two certificates that join the old key and the new one:

- *old-signs-new* (RFC 4210: OldWithNew... named from the relying party's side, "NewWithOld"): the new
  public key, the CA's subject, issued and signed by the old key. Whoever trusts the old key can verify
  the new one through it.
- *new-signs-old* ("OldWithNew"): the old public key, signed by the new key, for relying parties that
  already have only the new key.

Both are self-issued CA certificates (subject = issuer, RFC 5280 section 6.1) with the profile of the CA
certificate they stand beside: the same basicConstraints (cA=TRUE and pathLenConstraint), keyUsage
keyCertSign and cRLSign (both critical), the certified key's subjectKeyIdentifier, and the signing key's as
authorityKeyIdentifier; as every certificate the CA issues, the signing generation's CRL and certificate
URLs. Their validity never passes the signing generation's nor the certified key's certificate. This module
only builds: the key backend signs through :mod:`ca.pki.signing`.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .profiles import CA_KEY_USAGE, IssuerUrls, issuer_extensions


def link_certificate_builder(
    *,
    certified: x509.Certificate,
    signer: x509.Certificate,
    serial: int,
    now: dt.datetime,
    signer_urls: IssuerUrls,
    backdate: dt.timedelta = dt.timedelta(minutes=5),
) -> x509.CertificateBuilder:
    """The link certificate of ``certified``'s key, issued by the CA key of ``signer`` (another key
    generation of the same CA: the same subject), with ``certified``'s CA profile."""
    if certified.subject != signer.subject:
        raise ValueError("a link certificate joins two key generations of one CA (the same subject)")
    public_key = certified.public_key()
    constraints = certified.extensions.get_extension_for_class(x509.BasicConstraints).value
    not_before = (now - backdate).replace(microsecond=0)
    not_after = min(certified.not_valid_after_utc, signer.not_valid_after_utc).replace(microsecond=0)
    if not_after <= now:
        raise ValueError("one of the two key generations has expired: no link certificate can be made")
    builder = (
        x509.CertificateBuilder()
        .subject_name(certified.subject)
        .issuer_name(signer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=constraints.path_length), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return issuer_extensions(builder, issuer=signer, urls=signer_urls)


def is_link(certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` is self-issued (subject = issuer) but not self-signed: a link certificate
    between two keys of one CA, as opposed to a root's own certificate."""
    if certificate.subject != certificate.issuer:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return True
    return False


# --- the CA bundle's text ---------------------------------------------------------------------------------

#: The comment line before a certificate of a CA bundle that says where that generation's CRL is (the
#: portal writes it, ``enroll-crl-sync --ca-bundle-url`` reads it).
CRL_LINE = "# CRL: "


def comment(text: str) -> str:
    """``text`` for a comment line of a PEM file: one line, ASCII (a CA name such as "Société" becomes
    "Soci\\xe9t\\xe9"), so that the whole file stays ASCII as RFC 7468 PEM is."""
    return " ".join(text.split()).encode("ascii", "backslashreplace").decode("ascii")
