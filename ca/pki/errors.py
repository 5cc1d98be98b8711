"""Refusals raised by the PKI core.

Every refusal carries a machine-readable :class:`Refusal` code and a message in plain words that says
what is wrong and what to do. Callers (forms, management commands) show the message as it is; the code
is for tests, logs and audit entries. No refusal message ever contains submitted key material.
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


class RequestRefused(ValueError):
    """A certificate request (or its key) does not meet the portal's rules."""

    def __init__(self, code: Refusal, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class CAKeyError(RuntimeError):
    """A CA private key file cannot be read, decrypted or does not match its certificate."""
