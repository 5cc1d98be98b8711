"""Usernames that can be names on certificates (the subject's commonName), and look-alikes refused.

The rules (docs/ARCHITECTURE.md, "Accounts: names and addresses"), applied wherever a username is chosen
(sign-up, the admin's add-user form), never at approval:

* **Allowed characters.** By default ASCII letters, digits, ``.``, ``_`` and ``-``; 1 to 64 characters
  (``ub-common-name``, RFC 5280). With ``ENROLL_USERNAME_UNICODE = True`` any Unicode letters and digits
  as well, after NFKC normalisation, and all letters from one script (``\\u0430lice``, a Cyrillic a
  before Latin lice, is refused as mixed-script).
* **Unique, case-insensitively and by confusable skeleton** (Unicode TR 39, section 4): a name is refused
  when one of its :func:`keys` is a key of an existing account.

The skeleton data is that of the ``confusable-homoglyphs`` package (3.3.1; its ``confusables.json`` is built
from Unicode's ``security/latest/confusables.txt`` and records no Unicode version; it stores every mapping
both ways, without direction). Restricted to the ASCII characters a default username may hold, it contains
exactly three classes: ``0`` and ``O``; ``1``, ``I`` and ``l``; ``m`` and ``rn``. :data:`ASCII_SKELETON` is
that map, written out (a test checks it against the package's data). TR 39 has no ``vv`` -> ``w`` nor
``cl`` -> ``d`` mapping, so neither is refused. For Unicode names each character of a confusable class is
replaced by the smallest member of its class (the classes are the connected groups of the package's
single-character pairs), then the ASCII map applies.

Case: a skeleton is case-sensitive (``I`` looks like ``l``, ``i`` does not), so :func:`keys` takes the
skeleton of the name as typed, lower-cased and upper-cased, each folded to lower case: ``aIice``, ``AIice``
and ``ALICE`` all share a key with ``alice``; ``bob1`` shares one with ``bobl`` (intended).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib import resources

from confusable_homoglyphs import categories
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

#: The most characters a certificate's commonName holds (RFC 5280 ub-common-name).
MAX_LENGTH = 64
ASCII_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
#: TR 39 confusables.txt restricted to [A-Za-z0-9._-] (as in confusable-homoglyphs 3.3.1): each character
#: or pair to its class's representative.
ASCII_SKELETON: dict[str, str] = {"0": "O", "1": "l", "I": "l", "rn": "m"}
_ASCII_SKELETON_RE = re.compile("|".join(sorted(map(re.escape, ASCII_SKELETON), key=len, reverse=True)))
ASCII_RULE = gettext_lazy(
    "Use 1 to 64 characters: letters a-z and A-Z, digits, and . _ - only. It appears in your certificates."
)
UNICODE_RULE = gettext_lazy(
    "Use 1 to 64 characters: letters and digits of one script, and . _ - only. "
    "It appears in your certificates."
)
LOOK_ALIKE = gettext_lazy(
    "This username is taken, or looks too much like one that is (for example 1 and l, 0 and O)."
)


def unicode_allowed() -> bool:
    return bool(getattr(settings, "ENROLL_USERNAME_UNICODE", False))


def rule_words() -> str:
    """The rule for usernames, in the active language."""
    return str(UNICODE_RULE if unicode_allowed() else ASCII_RULE)


def normalise(name: str) -> str:
    """The form a name is stored in: unchanged for ASCII names, NFKC when Unicode is allowed."""
    return unicodedata.normalize("NFKC", name) if unicode_allowed() else name


def problem(name: str) -> str | None:
    """Why ``name`` (already :func:`normalise`\\ d) cannot be a username, in plain words; None if it can."""
    if not name:
        return _("Choose a username.")
    if len(name) > MAX_LENGTH:
        return _(
            "Use at most %(limit)d characters (a certificate name holds no more); this has %(length)d."
        ) % {"limit": MAX_LENGTH, "length": len(name)}
    if not unicode_allowed():
        if not ASCII_PATTERN.match(name):
            return str(ASCII_RULE)
        return None
    if unicodedata.normalize("NFKC", name) != name:
        return str(UNICODE_RULE)
    for char in name:
        if char in "._-":
            continue
        if unicodedata.category(char)[0] not in "LN":
            return str(UNICODE_RULE)
    scripts = _scripts(name) - {"COMMON", "INHERITED"}
    if len(scripts) > 1:
        names = sorted(script.title() for script in scripts)
        return _("Use letters of one script only: this name mixes %(scripts)s.") % {
            "scripts": ", ".join(names)
        }
    return None


def _scripts(name: str) -> set[str]:
    return set(categories.unique_aliases(name))


@functools.cache
def _unicode_representatives() -> dict[str, str]:
    """Each character of a single-character confusable class to the class's smallest member."""
    data = json.loads(
        resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    parent: dict[str, str] = {}

    def find(char: str) -> str:
        while parent.setdefault(char, char) != char:
            parent[char] = parent[parent[char]]
            char = parent[char]
        return char

    for source, targets in data.items():
        for target in targets:
            if len(source) == 1 and len(target["c"]) == 1:
                a, b = find(source), find(target["c"])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {char: find(char) for char in parent if find(char) != char}


def skeleton(name: str) -> str:
    """The TR 39 skeleton of ``name`` as described in the module docstring (case-sensitive)."""
    if unicode_allowed():
        table = _unicode_representatives()
        name = "".join(table.get(char, char) for char in unicodedata.normalize("NFD", name))
        name = unicodedata.normalize("NFD", name)
    return _ASCII_SKELETON_RE.sub(lambda m: ASCII_SKELETON[m.group(0)], name)


def keys(name: str) -> frozenset[str]:
    """Two names clash when their keys meet: skeletons of the name, lower- and upper-cased, folded."""
    return frozenset(skeleton(form).casefold() for form in (name, name.lower(), name.upper()))


def clashing_account(name: str, *, exclude_pk: int | str | None = None) -> str | None:
    """The username of an existing account ``name`` clashes with (same name in any case, or a look-alike).

    Compares with every account (one query of usernames): fine for the accounts a portal has; an index of
    keys would be the next step for millions.
    """
    wanted = keys(name)
    users = get_user_model()._default_manager.all()
    if exclude_pk is not None:
        users = users.exclude(pk=exclude_pk)
    for other in users.values_list("username", flat=True).iterator():
        if other.casefold() == name.casefold() or keys(other) & wanted:
            return str(other)
    return None


def existing_problems() -> list[str]:
    """One line per existing account that breaks the rules: a name that cannot be chosen today, or a
    look-alike of an older account's name. Nothing is changed (``manage.py check_usernames``)."""
    lines: list[str] = []
    seen: dict[str, str] = {}
    users = get_user_model()._default_manager.order_by("date_joined", "pk")
    for name in users.values_list("username", flat=True).iterator():
        name = str(name)
        problem_words = problem(name)
        if problem_words is None and normalise(name) != name:
            problem_words = "Not in NFKC form."
        if problem_words is not None:
            lines.append(f"{name!a}: {problem_words}")
        for key in sorted(keys(name) | {"\0" + name.casefold()}):
            older = seen.setdefault(key, name)
            if older != name:
                lines.append(f"{name!a}: looks like the older account {older!a}.")
                break
    return lines
