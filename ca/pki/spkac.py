"""Parse and check a Netscape SPKAC (SignedPublicKeyAndChallenge): what ``<keygen>`` and ``openssl spkac``
make.

The format (Netscape's "keygen" documentation; HTML 5.1 section 4.10.12 "The keygen element", removed
from HTML since; OpenSSL's ``openssl-spkac(1)``)::

    SignedPublicKeyAndChallenge ::= SEQUENCE {
        publicKeyAndChallenge PublicKeyAndChallenge,
        signatureAlgorithm    AlgorithmIdentifier,
        signature             BIT STRING }
    PublicKeyAndChallenge ::= SEQUENCE {
        spki      SubjectPublicKeyInfo,
        challenge IA5STRING }

The signature is made with the private key of ``spki`` over the DER of ``publicKeyAndChallenge``; it
proves possession of the key and binds the challenge the portal handed out. Unlike a PKCS#10 request an
SPKAC carries no subject and no extensions.

Accepted encoding: the base64 of the DER, with or without the ``SPKAC=`` prefix that ``openssl spkac``
prints, with spaces and line breaks anywhere (legacy browsers post it wrapped); raw DER too (a file).
Exactly one object, nothing after it (strict DER parsing with asn1crypto, as `cryptography` has no SPKAC
support and pyOpenSSL dropped it).

Order of checks: size (before any parsing), private-key detection (refused, never echoed), base64,
DER structure (one object), the signature's hash (MD5, what old browsers and ``openssl spkac`` without
``-digest`` produce, only with ``allow_md5``; SHA-1 never), the key's algorithm (by OID, before the key is
loaded), the signature over publicKeyAndChallenge,
then the same key policy as for CSRs (:mod:`.keypolicy`). The challenge is returned to the caller, who
compares it with the one it issued.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from asn1crypto import algos, core, keys
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .errors import Refusal, RequestRefused
from .keypolicy import (
    ALLOWED_SIGNATURE_HASHES,
    KeyInfo,
    check_key_encoding,
    check_public_key,
    check_reencoding,
)
from .submission import (
    BASE64_TEXT,
    base64_start,
    decode_base64,
    first_der_object,
    private_key_warning,
    refuse_deep_der,
    refuse_private_key_der,
    submitted_bytes,
)

#: Largest submission accepted, checked before any parsing. An RSA 4096 SPKAC in base64 is about 1 KiB.
MAX_SPKAC_BYTES = 16 * 1024
#: Longest challenge accepted inside an SPKAC (the portal's own are 40 characters).
MAX_CHALLENGE_CHARS = 256

_PREFIX = re.compile(rb"\A\s*SPKAC\s*=", re.IGNORECASE)

#: The hashes of :data:`.keypolicy.ALLOWED_SIGNATURE_HASHES`, by the names asn1crypto gives them.
_SHA2_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

SPKAC_COMMAND_HINT = "openssl spkac -key my.key -challenge CHALLENGE -digest sha256"

PRIVATE_KEY_WARNING = private_key_warning(
    instead=f"Submit the SPKAC made from it instead: {SPKAC_COMMAND_HINT}."
)

_NOT_AN_SPKAC = (
    "This is not an SPKAC: paste the line that starts with SPKAC= as openssl spkac printed it "
    f"({SPKAC_COMMAND_HINT})."
)

_MALFORMED = (
    "This is not a valid SPKAC (SignedPublicKeyAndChallenge). Make it again with "
    f"{SPKAC_COMMAND_HINT} and paste the whole line it prints."
)


class PublicKeyAndChallenge(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no type hints
    """``PublicKeyAndChallenge ::= SEQUENCE { spki SubjectPublicKeyInfo, challenge IA5STRING }``."""

    _fields = [
        ("spki", keys.PublicKeyInfo),
        ("challenge", core.IA5String),
    ]


class SignedPublicKeyAndChallenge(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no type hints
    """``SignedPublicKeyAndChallenge ::= SEQUENCE { publicKeyAndChallenge, signatureAlgorithm, signature }``.

    The signature is a BIT STRING over the DER of ``publicKeyAndChallenge``.
    """

    _fields = [
        ("public_key_and_challenge", PublicKeyAndChallenge),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature", core.OctetBitString),
    ]


@dataclass(frozen=True, slots=True)
class ParsedSpkac:
    """An SPKAC that passed every check. ``der`` is the canonical form to store."""

    der: bytes
    sha256: str
    public_key: PublicKeyTypes
    key: KeyInfo
    challenge: str
    signature_hash: str  # "sha256", ... or "md5" when allowed

    @property
    def public_key_der(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _decode(raw: bytes) -> bytes:
    """The DER of the submission: raw DER as it is, else base64 with an optional ``SPKAC=`` prefix."""
    if raw[:1] == b"\x30":
        return raw
    if b"PRIVATE KEY" in raw.upper():
        raise RequestRefused(Refusal.PRIVATE_KEY, PRIVATE_KEY_WARNING)
    if b"-----BEGIN" in raw:
        raise RequestRefused(
            Refusal.NOT_A_REQUEST,
            "This is a PEM block (a CSR or a certificate?), not an SPKAC. Submit a CSR on the "
            f"certificate request page, or make an SPKAC with: {SPKAC_COMMAND_HINT}.",
        )
    text = _PREFIX.sub(b"", raw, count=1).strip()
    if not text:
        raise RequestRefused(Refusal.EMPTY, "The SPKAC is empty. Paste the whole line openssl spkac printed.")
    if not BASE64_TEXT.fullmatch(text):
        raise RequestRefused(Refusal.NOT_A_REQUEST, _NOT_AN_SPKAC)
    try:
        return decode_base64(
            text,
            refusal="The SPKAC is not valid base64: it has been altered or cut. Copy the whole line again.",
        )
    except RequestRefused:
        if base64_start(text)[:1] != b"\x30":  # its start is no DER SEQUENCE: it never was an SPKAC
            raise RequestRefused(Refusal.NOT_A_REQUEST, _NOT_AN_SPKAC) from None
        raise


def _one_object(der: bytes) -> None:
    """Refuse DER that is cut short, or followed by anything (exactly one object)."""
    cut = "The SPKAC is incomplete: it was cut short. Copy the whole line openssl spkac printed."
    first = first_der_object(der, cut=cut, unreadable=_MALFORMED)
    if first[:1] != b"\x30":  # not a SEQUENCE: no SPKAC at all, whatever follows it
        raise RequestRefused(Refusal.MALFORMED, _MALFORMED)
    if len(first) != len(der):
        raise RequestRefused(
            Refusal.MULTIPLE, "There is extra data after the SPKAC; submit exactly one SPKAC."
        )


@dataclass(frozen=True, slots=True)
class _Fields:
    tbs_der: bytes  # the DER of publicKeyAndChallenge, as signed
    spki_der: bytes
    key_algorithm: str  # the SubjectPublicKeyInfo's algorithm OID, dotted
    challenge: str
    hash_name: str  # "md5", "sha256", ... or "" when the algorithm names none
    signature_algo: str  # "rsassa_pkcs1v15", "ecdsa", ...
    signature: bytes


def _load(der: bytes) -> _Fields:
    """Strictly parse the SPKAC structure (asn1crypto) into the fields the checks need."""
    try:
        spkac = SignedPublicKeyAndChallenge.load(der, strict=True)
        tbs = spkac["public_key_and_challenge"]
        spki_der = tbs["spki"].dump()
        key_algorithm = tbs["spki"]["algorithm"]["algorithm"].dotted
        challenge = tbs["challenge"].native
        algorithm = spkac["signature_algorithm"]
        algorithm_name = algorithm["algorithm"].native
        signature = spkac["signature"].native
        tbs_der = tbs.dump()
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):  # IndexError: an empty BIT STRING
        raise RequestRefused(Refusal.MALFORMED, _MALFORMED) from None
    if not isinstance(challenge, str) or not isinstance(signature, bytes):
        raise RequestRefused(Refusal.MALFORMED, _MALFORMED)
    try:
        hash_name, signature_algo = str(algorithm.hash_algo), str(algorithm.signature_algo)
    except (ValueError, TypeError, KeyError):  # unknown, or RSASSA-PSS with missing or broken parameters
        hash_name, signature_algo = "", str(algorithm_name)
    return _Fields(tbs_der, spki_der, key_algorithm, challenge, hash_name, signature_algo, signature)


def _check_hash(hash_name: str, *, allow_md5: bool) -> hashes.HashAlgorithm:
    """The hash to verify with: SHA-256/384/512 as for CSRs, MD5 only with ``allow_md5``."""
    hash_class = _SHA2_HASHES.get(hash_name)
    if hash_class is not None and hash_name in ALLOWED_SIGNATURE_HASHES:
        return hash_class()
    if hash_name == "md5":
        if allow_md5:
            return hashes.MD5()  # noqa: S303  # only with the legacy setting, verification only
        raise RequestRefused(
            Refusal.SIGNATURE_ALGORITHM,
            "The SPKAC is signed with MD5, which is no longer safe (it is what openssl spkac does without "
            "-digest, and what old browsers' <keygen> did). Make it again with -digest sha256: "
            f"{SPKAC_COMMAND_HINT}.",
        )
    if hash_name == "sha1":
        raise RequestRefused(
            Refusal.SIGNATURE_ALGORITHM,
            "The SPKAC is signed with SHA-1, which is no longer safe: only SHA-256, SHA-384 and SHA-512 "
            f"are accepted. Make it again with -digest sha256: {SPKAC_COMMAND_HINT}.",
        )
    named = f" (with {hash_name.upper()})" if hash_name else ""
    raise RequestRefused(
        Refusal.SIGNATURE_ALGORITHM,
        f"The SPKAC's signature algorithm{named} is not accepted: only SHA-256, SHA-384 and SHA-512 are. "
        f"Make it again with -digest sha256: {SPKAC_COMMAND_HINT}.",
    )


def _verify(
    *,
    public_key: PublicKeyTypes,
    signature_algo: str,
    algorithm: hashes.HashAlgorithm,
    signature: bytes,
    tbs: bytes,
) -> None:
    """Verify the signature over the DER of publicKeyAndChallenge (RSA PKCS#1 v1.5 or ECDSA)."""
    rsa_key = isinstance(public_key, rsa.RSAPublicKey) and signature_algo == "rsassa_pkcs1v15"
    ec_key = isinstance(public_key, ec.EllipticCurvePublicKey) and signature_algo == "ecdsa"
    if not (rsa_key or ec_key):
        raise RequestRefused(
            Refusal.SIGNATURE_ALGORITHM,
            "The SPKAC's signature algorithm does not go with its key, or is not accepted: sign with "
            f"RSA (PKCS#1 v1.5) or ECDSA and SHA-256: {SPKAC_COMMAND_HINT}.",
        )
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, tbs, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, tbs, ec.ECDSA(algorithm))
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        raise RequestRefused(
            Refusal.BAD_SIGNATURE,
            "The SPKAC's signature does not match its public key and challenge: it was altered after it "
            "was signed, or is damaged. Make it again from your key and paste it unchanged.",
        ) from None


def check_spkac_der(*, der: bytes, allow_md5: bool = False) -> ParsedSpkac:
    """Check a DER SPKAC: one object, hash policy, valid signature over publicKeyAndChallenge, key policy.

    Used both at submission and again by the CA right before signing. ``allow_md5`` accepts MD5
    signatures (a legacy fleet's setting); SHA-1 is never accepted.
    """
    refuse_deep_der(
        der,
        refusal="This is not an SPKAC: its structure is nested far deeper than any real SPKAC's. "
        f"Make it again with: {SPKAC_COMMAND_HINT}.",
    )
    refuse_private_key_der(der, warning=PRIVATE_KEY_WARNING)
    _one_object(der)
    fields = _load(der)
    algorithm = _check_hash(fields.hash_name, allow_md5=allow_md5)
    check_key_encoding(spki_der=fields.spki_der)  # before the key is loaded
    try:
        public_key = serialization.load_der_public_key(fields.spki_der)
    except (UnsupportedAlgorithm, ValueError):
        raise RequestRefused(
            Refusal.KEY_TYPE,
            "The SPKAC's public key is of a type the portal does not accept, or is damaged. "
            "Use an ECDSA P-256 or RSA 3072 key.",
        ) from None
    _verify(
        public_key=public_key,
        signature_algo=fields.signature_algo,
        algorithm=algorithm,
        signature=fields.signature,
        tbs=fields.tbs_der,
    )
    check_reencoding(public_key=public_key, spki_der=fields.spki_der)
    key = check_public_key(public_key=public_key)
    if len(fields.challenge) > MAX_CHALLENGE_CHARS:
        raise RequestRefused(
            Refusal.MALFORMED,
            "The SPKAC's challenge is far longer than the portal's: use the challenge the page shows.",
        )
    return ParsedSpkac(
        der=der,
        sha256=hashlib.sha256(der).hexdigest(),
        public_key=public_key,
        key=key,
        challenge=fields.challenge,
        signature_hash=algorithm.name,
    )


def parse_spkac(*, data: bytes | str, allow_md5: bool = False) -> ParsedSpkac:
    """Parse a submission (base64 with or without ``SPKAC=``, or DER) into a checked SPKAC.

    Raises :class:`RequestRefused`. The size cap is applied to the raw submission before anything else.
    """
    raw = submitted_bytes(
        data,
        limit=MAX_SPKAC_BYTES,
        what="an SPKAC",
        advice="Paste only the line openssl spkac printed.",
        empty="Nothing was submitted. Paste the SPKAC openssl spkac printed.",
    )
    der = _decode(raw if raw[:1] == b"\x30" else raw.strip())
    if not der:
        raise RequestRefused(Refusal.EMPTY, "The SPKAC is empty. Paste the whole line openssl spkac printed.")
    return check_spkac_der(der=der, allow_md5=allow_md5)
