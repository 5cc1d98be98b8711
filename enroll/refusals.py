"""Refusals of the PKI core as sentences in the person's language.

``ca.pki`` stays free of Django, so it cannot translate: it refuses with
:class:`~ca.pki.errors.RequestRefused`, which carries a stable :class:`~ca.pki.errors.Refusal` code, the
parameters its sentence names (``params``: a PEM label, a count, a size) and an English message. This module
is the portal's side: :data:`WORDINGS` gives each code translatable sentences (gettext with named
placeholders, in ``enroll/locale``), and :func:`describe` is what the pages show.

- In English, the source language of the core, :func:`describe` shows the core's own message: it names
  every detail it checked (the key's size, the curve, the hash), which not every refusal passes on as a
  parameter yet.
- In any other language it shows :func:`sentence`: the first wording of the code whose parameters the
  refusal carries, so a refusal with a PEM label names it and one without gets the general sentence.

A code added to :class:`~ca.pki.errors.Refusal` without a wording here fails
``tests/i18n/test_refusal_sentences.py``. Parameters are never submitted key material (the core's rule);
pages escape them like any other value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ca.pki.errors import Refusal, RequestRefused

_NEW_CSR = "openssl req -new -key my.key -out my.csr"
_NEW_EC_KEY = "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
_NEW_RSA_KEY = "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072"


@dataclass(frozen=True)
class Wording:
    """One sentence for a refusal code; it fits a refusal that carries every parameter in ``needs``."""

    text: Promise
    needs: frozenset[str] = frozenset()


def _w(text: Promise, *needs: str) -> Wording:
    return Wording(text, frozenset(needs))


#: Each code's sentences, most precise first; the last of each needs no parameter. The commands named in
#: them are filled in as parameters too (``%(command)s``), so translators never touch them.
WORDINGS: dict[Refusal, tuple[Wording, ...]] = {
    Refusal.EMPTY: (
        _w(_("Nothing was submitted: the request is empty. Paste the whole request, or upload its file.")),
    ),
    Refusal.TOO_LARGE: (
        _w(
            _(
                "The submission is %(size)s bytes; a request is at most %(limit_kib)s KiB. Submit only the "
                "request, not a bundle of files or a log."
            ),
            "size",
            "limit_kib",
        ),
        _w(_("The submission is too large for a certificate request. Submit only the request itself.")),
    ),
    Refusal.PRIVATE_KEY: (
        _w(
            _(
                "This is a private key. Never send your private key to anyone, this portal included: it "
                "stays on your computer. Nothing of it was stored. Submit the certificate request made from "
                "it instead, for example: %(command)s. If this key was sent anywhere else, treat it as "
                "compromised and make a new one."
            )
        ),
    ),
    Refusal.CERTIFICATE: (
        _w(
            _(
                "This is a certificate, not a certificate request. Submit the request (CSR, -----BEGIN "
                "CERTIFICATE REQUEST-----) made with: %(command)s."
            )
        ),
    ),
    Refusal.MULTIPLE: (
        _w(
            _(
                "The submission holds %(count)s objects (several requests, or extra data after one); submit "
                "exactly one request at a time."
            ),
            "count",
        ),
        _w(
            _("There is more than one request, or extra data after it; submit exactly one request at a time.")
        ),
    ),
    Refusal.NOT_A_REQUEST: (
        _w(
            _(
                "This is a PEM block of type “%(label)s”, not a certificate request. Submit the request "
                "(CSR): text that starts with -----BEGIN CERTIFICATE REQUEST-----, or the file itself."
            ),
            "label",
        ),
        _w(
            _(
                "This is not a certificate request. Submit the request you made (with openssl req, keytool "
                "-certreq or openssl spkac), as text or as the file itself."
            )
        ),
    ),
    Refusal.BAD_ENCODING: (
        _w(
            _(
                "The request was altered or cut: its text is not valid base64 any more. Copy the whole "
                "request again without changing it, or upload the file itself."
            )
        ),
    ),
    Refusal.TRUNCATED: (
        _w(
            _(
                "The request is incomplete: a -----BEGIN line has no matching -----END line. Copy the whole "
                "request again, including the last line, or upload the file itself."
            ),
            "missing",
        ),
        _w(
            _(
                "The request is incomplete: it was cut off before its end. Copy the whole request again, "
                "including the last line, or upload the file itself."
            )
        ),
    ),
    Refusal.MALFORMED: (
        _w(
            _(
                "The request is damaged: it is not a valid request and cannot be read. Make it again (for "
                "example with openssl req or keytool -certreq) and submit the whole file."
            )
        ),
    ),
    Refusal.BAD_SIGNATURE: (
        _w(
            _(
                "The request's signature does not match its public key: it was altered after it was signed, "
                "or is damaged. Make a new request from your key and submit it unchanged."
            )
        ),
    ),
    Refusal.SIGNATURE_ALGORITHM: (
        _w(
            _(
                "The request is signed with %(hash)s, which is not accepted: only SHA-256, SHA-384 and "
                "SHA-512 are. Sign it with SHA-256 (for example: openssl req -new -sha256 ...)."
            ),
            "hash",
        ),
        _w(
            _(
                "The request's signature algorithm is not one the portal accepts. Sign it with SHA-256 and "
                "an RSA or ECDSA key (for example: openssl req -new -sha256 ...)."
            )
        ),
    ),
    Refusal.KEY_TYPE: (
        _w(
            _(
                "The request's key is of a type the portal does not accept. Use an ECDSA P-256 or RSA 3072 "
                "key."
            )
        ),
    ),
    Refusal.KEY_SIZE: (
        _w(
            _("The RSA key has %(bits)s bits; use 2048, 3072 or 4096 bits (for example: %(command)s)."),
            "bits",
        ),
        _w(_("The RSA key's size is not accepted; use 2048, 3072 or 4096 bits (for example: %(command)s).")),
    ),
    Refusal.RSA_EXPONENT: (
        _w(
            _(
                "The RSA key uses public exponent %(exponent)s; only 65537 is accepted. Generate a new key "
                "with the default exponent."
            ),
            "exponent",
        ),
        _w(
            _(
                "The RSA key's public exponent is not accepted (only 65537 is). Generate a new key with the "
                "default exponent."
            )
        ),
    ),
    Refusal.RSA_SMALL_FACTOR: (
        _w(
            _(
                "The RSA key is broken: its modulus has a small prime factor, so anyone can compute the "
                "private key. Generate a new key with openssl or your platform's key tool."
            )
        ),
    ),
    Refusal.RSA_CLOSE_PRIMES: (
        _w(
            _(
                "The RSA key is broken: its two primes are so close that the private key can be computed "
                "(Fermat factoring). Generate a new key with an up-to-date key generator."
            )
        ),
    ),
    Refusal.RSA_ROCA: (
        _w(
            _(
                "The RSA key was made by a vulnerable chip or library (the ROCA weakness, CVE-2017-15361): "
                "anyone can compute its private key. Make a new key with up-to-date software (for example: "
                "%(command)s), or update the firmware of the smart card or token first."
            )
        ),
    ),
    Refusal.EC_CURVE: (
        _w(
            _(
                "The elliptic-curve key uses curve %(curve)s; only P-256 (prime256v1) and P-384 (secp384r1) "
                "are accepted. Generate a new key, for example: %(command)s."
            ),
            "curve",
        ),
        _w(
            _(
                "The elliptic-curve key's curve is not accepted: only P-256 (prime256v1) and P-384 "
                "(secp384r1) are. Generate a new key, for example: %(command)s."
            )
        ),
    ),
    Refusal.KEY_ENCODING: (
        _w(
            _(
                "The request's public key is not encoded the standard way. Make a new key and request with "
                "openssl or your platform's key tool (for example: %(command)s)."
            )
        ),
    ),
}

#: The command a sentence names (``%(command)s``), by code.
COMMANDS: dict[Refusal, str] = {
    Refusal.PRIVATE_KEY: _NEW_CSR,
    Refusal.CERTIFICATE: _NEW_CSR,
    Refusal.KEY_SIZE: _NEW_RSA_KEY,
    Refusal.RSA_ROCA: _NEW_RSA_KEY,
    Refusal.EC_CURVE: _NEW_EC_KEY,
    Refusal.KEY_ENCODING: _NEW_EC_KEY,
}


def sentence(code: Refusal | str, params: Mapping[str, object] | None = None) -> str:
    """The refusal ``code`` with its ``params`` as a sentence in the active language: the first wording of
    the code whose parameters are all given. An unknown code (a newer core) gets a general sentence."""
    given = {name: value for name, value in (params or {}).items() if value not in (None, "")}
    try:
        wordings = WORDINGS[Refusal(code)]
    except ValueError:
        return str(_("The request was refused. Make it again and submit the whole file unchanged."))
    for wording in wordings:
        if wording.needs <= given.keys():
            values = {**given, "command": COMMANDS.get(Refusal(code), "")}
            return str(wording.text) % values
    raise AssertionError(f"the last wording of {code} must need no parameter")  # pragma: no cover


def describe(refused: RequestRefused) -> str:
    """What the portal shows for ``refused``: the core's own message in English (its source language,
    with every detail), else :func:`sentence` in the active language."""
    language = translation.get_language() or "en"
    if language.split("-")[0] == "en":
        return refused.message
    return sentence(refused.code, refused.params)
