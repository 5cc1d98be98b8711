"""Exports of certificates (PEM, DER, chain, PKCS#7) and of CA certificates and CRLs as PEM."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ca.errors import CAError
from ca.models import (
    Certificate,
    CertificateAuthority,
    CrlPublication,
)
from ca.pki.pem import pem_armor

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Export:
    content: bytes
    content_type: str
    extension: str


EXPORT_FORMATS = ("pem", "der", "chain", "pkcs7")
#: Offered only where they fit (x509-user-cert: on the page of a certificate issued for an SPKAC).
LEGACY_EXPORT_FORMATS = ("x509-user-cert",)
#: Every format :func:`export_certificate` writes.
ALL_EXPORT_FORMATS = EXPORT_FORMATS + LEGACY_EXPORT_FORMATS


def export_certificate(*, certificate: Certificate, fmt: str) -> Export:
    """A certificate as PEM, DER, full chain PEM (leaf first) or certs-only PKCS#7 (PEM).

    ``x509-user-cert`` is the DER as ``application/x-x509-user-cert``: the answer the old ``<keygen>``
    (SPKAC) flow expects, which legacy browsers install next to the key they generated.
    """
    der = bytes(certificate.der)
    chain = certificate.ca.chain()
    match fmt:
        case "pem":
            return Export(pem_armor(der=der, label="CERTIFICATE"), "application/x-pem-file", "pem")
        case "der":
            return Export(der, "application/pkix-cert", "cer")
        case "x509-user-cert":
            return Export(der, "application/x-x509-user-cert", "crt")
        case "chain":
            parts = [der, *(bytes(ca.certificate_der) for ca in chain)]
            return Export(
                b"".join(pem_armor(der=p, label="CERTIFICATE") for p in parts),
                "application/x-pem-file",
                "chain.pem",
            )
        case "pkcs7":
            certs = [certificate.x509, *(ca.certificate for ca in chain)]
            return Export(
                pkcs7.serialize_certificates(certs, serialization.Encoding.PEM),
                "application/x-pkcs7-certificates",
                "p7b",
            )
    raise CAError(f"Unknown format '{fmt}'; use one of {', '.join(ALL_EXPORT_FORMATS)}.")


def ca_certificate_pem(ca: CertificateAuthority) -> bytes:
    return pem_armor(der=bytes(ca.certificate_der), label="CERTIFICATE")


def crl_pem(publication: CrlPublication) -> bytes:
    return pem_armor(der=bytes(publication.der), label="X509 CRL")
