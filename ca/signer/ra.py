"""The signer's SCEP operations with a CA's RA key (RFC 8894): decrypting a request's content-encryption key
and signing a reply's CMS signed attributes. Only an RA key is ever used here, never a CA key: an RA
certificate is no CA (it certifies nothing anyone trusts), and the CA key never signs raw bytes.

The web side asks for these through :class:`ca.signer.client.SignerRaKey`, so a web worker needs neither
the RA key file nor the passphrase that encrypts it. An RA is named by its certificate's SHA-256
fingerprint and must belong to the CA named and not be expired. What is signed must be the DER of a
SignerInfo's signed attributes (a SET with contentType and messageDigest, RFC 5652 5.3 and 5.4), so the
RA key signs no certificate, CRL or OCSP answer.
"""

from __future__ import annotations

import logging

from asn1crypto import cms
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

from ca.clock import utcnow
from ca.errors import CAError
from ca.models import ScepRaCertificate
from ca.services import scep as scep_service
from ca.signer import protocol
from ca.signer.tbs import Refused

logger = logging.getLogger(__name__)

_REQUIRED_ATTRIBUTES = {"content_type", "message_digest"}


def _signed_attributes(data: bytes) -> None:
    """Refuse anything but the DER of CMS signed attributes with contentType and messageDigest."""
    if data[:1] != b"\x31":
        raise Refused("the RA key signs CMS signed attributes only (a DER SET)")
    try:
        attributes = cms.CMSAttributes.load(data, strict=True)
        names = {attribute["type"].native for attribute in attributes}
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(f"the bytes are not CMS signed attributes ({exc})") from None
    if missing := _REQUIRED_ATTRIBUTES - names:
        raise Refused(f"the signed attributes lack {', '.join(sorted(missing))}")


def ra_of(request: protocol.RaRequest) -> ScepRaCertificate:
    """The unexpired RA certificate of the CA that ``request`` names, else :class:`Refused`."""
    ra = ScepRaCertificate.objects.filter(ca__slug=request.ca, fingerprint_sha256=request.ra).first()
    if ra is None:
        raise Refused(f"CA '{request.ca}' has no SCEP RA certificate {request.ra[:16]}")
    if ra.not_after <= utcnow():
        raise Refused(f"the SCEP RA certificate {ra.serial} of CA '{request.ca}' has expired")
    return ra


def answer(request: protocol.RaRequest) -> dict[str, object]:
    """The reply to an RA operation; :class:`Refused` when it is not one the signer does."""
    ra = ra_of(request)
    try:
        key = scep_service.ra_private_key(ra)
    except CAError as exc:
        logger.error("the signer cannot open the SCEP RA key of CA %s: %s", request.ca, exc)
        return protocol.error_reply(str(exc), unavailable=True)
    if request.operation == "ra-decrypt":
        try:
            plain = key.decrypt(request.data, PKCS1v15())
        except ValueError:
            return protocol.error_reply(
                "the ciphertext does not decrypt with this RA key", undecryptable=True
            )
        return protocol.ok_reply(plain)
    _signed_attributes(request.data)
    signature = key.sign(request.data, PKCS1v15(), request.algorithm)
    logger.info("signed SCEP signed attributes with the RA %s of CA %s", ra.serial, request.ca)
    return protocol.ok_reply(signature)
