"""E-mail addresses that can go into a certificate as written (subjectAltName rfc822Name, RFC 5280 4.2.1.6).

An account's verified address is put in its certificates, so sign-up and e-mail change accept only
addresses a certificate can carry exactly as typed, and that relying parties cannot mistake for markup:

* **Local part**: an RFC 5321 Dot-string only, i.e. atoms of letters, digits and
  ``! # $ % & ' * + / = ? ^ _ ` { | } ~ -`` joined by single dots; at most 64 characters. A quoted local
  part (``"<svg/onload=alert(1)>"@example.org``) is refused: RFC 5321 allows it, but it carries spaces,
  angle brackets and quotes into certificates, and few relying parties compare it correctly.
* **ASCII only in the local part**: rfc822Name is an IA5String (RFC 5280). A local part with other
  characters needs RFC 8398's SmtpUTF8Mailbox otherName, which this portal does not issue (out of scope);
  such addresses are refused with that reason.
* **Domain**: a host name of at least two labels, letters, digits and hyphens (no address literals such
  as ``[192.0.2.1]``), at most 253 characters. An internationalised domain is accepted and stored in IDNA
  A-label form (``xn--...``), as RFC 5280 (7.5) and RFC 8399 require in rfc822Name; labels already in
  A-label form must decode (IDNA 2008, package ``idna``, its Unicode data version in
  :data:`IDNA_DATA_VERSION`). The domain is stored in lower case; the local part as typed.
* The whole address is at most 254 characters (RFC 5321 path limit, less the angle brackets).
"""

from __future__ import annotations

import re

import idna
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from idna import idnadata

#: The Unicode version of the IDNA 2008 tables used (from the installed ``idna`` package).
IDNA_DATA_VERSION = str(getattr(idnadata, "__version__", "unknown"))
MAX_LENGTH = 254
MAX_LOCAL = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")

QUOTED = gettext_lazy("Use an address without quotes: a quoted local part cannot go into a certificate.")
NON_ASCII_LOCAL = gettext_lazy(
    "Use an address whose part before the @ has only ASCII letters, digits and . ! # $ % & ' * + / = ? ^ _ ` "
    "{ | } ~ -: certificates hold e-mail addresses in ASCII (RFC 5280), and this portal does not issue the "
    "internationalised form (RFC 8398)."
)
LOCAL_CHARACTERS = gettext_lazy(
    "Use an address whose part before the @ has only letters, digits and . ! # $ % & ' * + / = ? ^ _ ` "
    "{ | } ~ -, with no dot at the start, at the end or twice in a row."
)
DOMAIN = gettext_lazy(
    "Use an address whose domain is a host name such as example.org (letters, digits, hyphens and dots)."
)


class AddressProblem(ValueError):
    """Why an address cannot go into a certificate, in plain words (the message, in the active language)."""

    def __init__(self, message: object) -> None:
        super().__init__(str(message))


def certificate_form(address: str) -> str:
    """``address`` as it would go into a certificate (domain lower case, A-labels), or AddressProblem."""
    address = address.strip()
    if address.count("@") != 1 or address.startswith('"'):
        raise AddressProblem(QUOTED if '"' in address else _("Use an address with one @ in it."))
    local, domain = address.split("@")
    if '"' in local or "\\" in local:
        raise AddressProblem(QUOTED)
    if not local.isascii():
        raise AddressProblem(NON_ASCII_LOCAL)
    if len(local) > MAX_LOCAL:
        raise AddressProblem(_("Use at most %(limit)d characters before the @.") % {"limit": MAX_LOCAL})
    if not LOCAL_PART.match(local):
        raise AddressProblem(LOCAL_CHARACTERS)
    domain = _a_label_domain(domain)
    result = f"{local}@{domain}"
    if len(result) > MAX_LENGTH:
        raise AddressProblem(
            _("Use an address of at most %(limit)d characters (with the domain in ASCII).")
            % {"limit": MAX_LENGTH}
        )
    return result


def problem(address: str) -> str | None:
    """The plain-words reason ``address`` cannot go into a certificate, or None."""
    try:
        certificate_form(address)
    except AddressProblem as refusal:
        return str(refusal)
    return None


def _a_label_domain(domain: str) -> str:
    if not domain or domain.startswith("[") or domain.endswith("."):
        raise AddressProblem(DOMAIN)
    try:
        ascii_domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()
        idna.decode(ascii_domain)  # every xn-- label must be a valid A-label
    except (idna.IDNAError, UnicodeError, ValueError) as error:
        raise AddressProblem(DOMAIN) from error
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise AddressProblem(DOMAIN)
    if labels[-1].isdigit():
        raise AddressProblem(DOMAIN)
    return ascii_domain
