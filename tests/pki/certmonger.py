"""A certificate request shaped as certmonger's daemon makes one for SCEP (REAL-CLIENTS.md): the CN as a
PrintableString even though it holds ``_``, a challengePassword and an extensionRequest (key usage, basic
constraints, subject key identifier). ``cryptography`` refuses to build or read such a subject, so it is
built with asn1crypto and signed over its CertificationRequestInfo as certmonger signs it."""

from __future__ import annotations

import hashlib

from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


def certmonger_csr(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    common_name: bytes = b"certmonger_device",
    challenge: str = "a-code_with_underscores",
) -> bytes:
    """The DER of the request, its CN tagged PrintableString whatever ``common_name`` holds."""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    placeholder = b"X" * len(common_name)  # a PrintableString asn1crypto accepts; its bytes replaced below
    name = asn1_x509.Name.build({"common_name": placeholder.decode()}, use_printable=True)
    extensions = asn1_x509.Extensions(
        [
            {
                "extn_id": "key_usage",
                "critical": True,
                "extn_value": {
                    "digital_signature",
                    "non_repudiation",
                    "key_encipherment",
                    "data_encipherment",
                },
            },
            {"extn_id": "basic_constraints", "critical": False, "extn_value": {"ca": False}},
            {"extn_id": "key_identifier", "critical": False, "extn_value": hashlib.sha1(spki).digest()},  # noqa: S324
        ]
    )
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": name,
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(spki),
            "attributes": [
                {
                    "type": "challenge_password",
                    "values": [asn1_x509.DirectoryString(name="printable_string", value=challenge)],
                },
                {"type": "extension_request", "values": [extensions]},
            ],
        }
    )
    printable = b"\x13" + bytes([len(placeholder)]) + placeholder
    tbs = info.dump()
    assert tbs.count(printable) == 1
    tbs = tbs.replace(printable, b"\x13" + bytes([len(common_name)]) + common_name)
    if isinstance(key, rsa.RSAPrivateKey):
        signature, algorithm = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()), "sha256_rsa"
    else:
        signature, algorithm = key.sign(tbs, ec.ECDSA(hashes.SHA256())), "sha256_ecdsa"
    request = asn1_csr.CertificationRequest(
        {
            "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
            "signature_algorithm": {"algorithm": algorithm},
            "signature": signature,
        }
    )
    encoded: bytes = request.dump()
    return encoded
