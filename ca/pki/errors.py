"""Refusals raised by the PKI core.

Every refusal carries a machine-readable :class:`Refusal` code, the parameters its sentence names
(``params``: a PEM label, a size, a count) and the English message in plain words that says what is wrong
and what to do. Callers (forms, management commands) show the message as it is, or make their own sentence
from the code and its parameters (a translation); the code is also for tests, logs and audit entries. The
codes are stable: they are never renamed. No refusal message or parameter ever contains submitted key
material.

Two families matter most to the person who submitted: input that is **not a certificate request at all**
(:data:`NOT_A_REQUEST_AT_ALL`: random text, a certificate or a key pasted instead, a PEM block of another
type, DER of something else) and a request that was **cut off or altered** on its way (:data:`DAMAGED`:
PEM armour whose body is cut or changed, DER of a request that stops early or cannot be read). The first
needs the right file; the second needs the same file copied again, whole.
"""

from __future__ import annotations

import enum


class Refusal(enum.StrEnum):
    """Why a submission or a key was refused."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    PRIVATE_KEY = "private_key"
    CERTIFICATE = "certificate"
    MULTIPLE = "multiple"
    NOT_A_REQUEST = "not_a_request"
    BAD_ENCODING = "bad_encoding"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    SIGNATURE_ALGORITHM = "signature_algorithm"
    KEY_TYPE = "key_type"
    KEY_SIZE = "key_size"
    RSA_EXPONENT = "rsa_exponent"
    RSA_SMALL_FACTOR = "rsa_small_factor"
    RSA_CLOSE_PRIMES = "rsa_close_primes"
    RSA_ROCA = "rsa_roca"
    EC_CURVE = "ec_curve"
    KEY_ENCODING = "key_encoding"


#: Refusals of input that never was a certificate request: submit the right file.
NOT_A_REQUEST_AT_ALL = frozenset({Refusal.NOT_A_REQUEST, Refusal.CERTIFICATE, Refusal.PRIVATE_KEY})
#: Refusals of a request that was cut off or altered: copy the same file again, whole and unchanged.
DAMAGED = frozenset({Refusal.TRUNCATED, Refusal.BAD_ENCODING, Refusal.MALFORMED})


class RequestRefused(ValueError):
    """A certificate request (or its key) does not meet the portal's rules."""

    def __init__(self, code: Refusal, message: str, **params: str | int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: What the sentence names besides the code (e.g. ``label``, ``size``, ``limit``, ``count``).
        self.params: dict[str, str | int] = params

    def __str__(self) -> str:
        return self.message


class CAKeyError(RuntimeError):
    """A CA private key file cannot be read, decrypted or does not match its certificate."""


class KeyUnavailableError(CAKeyError):
    """The CA key cannot sign at all right now (token missing, wrong or locked PIN, no PKCS#11 module, no
    PIN configured, the signer not running): nothing was signed, and trying again once the operator fixed
    it will work. Not for a signature that does not verify, nor for a refusal of one certificate."""
