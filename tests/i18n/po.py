"""A small reader and writer of GNU gettext .po files, enough for the catalogue checks (no polib).

:func:`read` returns the catalogue's live entries (obsolete ``#~`` entries are skipped), each with its flags,
context, msgid, plural msgid and msgstr forms, and the line it starts on. :func:`write` writes entries
back in the form msgmerge writes (79-column lines are msgmerge's business: run the file through
``manage.py makemessages`` afterwards, which rewraps it).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Python-format placeholders: %(name)s, %s, %d, ... (and %% as a literal percent sign).
PLACEHOLDER = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<kind>[diouxXeEfFgGcrsa%])"
)


@dataclass
class Entry:
    msgid: str
    line: int = 0
    msgctxt: str | None = None
    msgid_plural: str | None = None
    #: msgstr, or msgstr[0], msgstr[1], ... for a plural entry.
    msgstr: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    comments: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str | None, str, str | None]:
        """What makes an entry itself: its context, msgid and plural msgid."""
        return (self.msgctxt, self.msgid, self.msgid_plural)

    @property
    def fuzzy(self) -> bool:
        return "fuzzy" in self.flags

    @property
    def translated(self) -> bool:
        return bool(self.msgstr) and all(self.msgstr)

    def where(self) -> str:
        context = f" (context {self.msgctxt!r})" if self.msgctxt is not None else ""
        return f"line {self.line}: {self.msgid!r}{context}"


def placeholders(text: str) -> list[str]:
    """The python-format placeholders of ``text``, sorted (``%%`` is none)."""
    found = []
    for match in PLACEHOLDER.finditer(text):
        if match.group("kind") == "%":
            continue
        name = match.group("name")
        found.append(f"%({name}){match.group('kind')}" if name is not None else f"%{match.group('kind')}")
    return sorted(found)


def _string(rest: str) -> str:
    return str(ast.literal_eval(rest.strip()))


def read(path: Path) -> list[Entry]:
    """The live entries of the .po file at ``path``, the header (msgid "") included, in file order."""
    entries: list[Entry] = []
    current: Entry | None = None
    keyword = ""
    flags: set[str] = set()
    comments: list[str] = []

    def finish() -> None:
        nonlocal current
        if current is not None:
            entries.append(current)
        current = None

    for number, raw in enumerate(path.read_text("utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            finish()
            keyword = ""
            continue
        if line.startswith("#~"):
            continue  # obsolete
        if line.startswith("#,"):
            finish()
            flags |= {flag.strip() for flag in line[2:].split(",") if flag.strip()}
            continue
        if line.startswith("#"):
            finish() if current is not None and keyword else None
            comments.append(line)
            continue
        if line.startswith('"'):
            if current is None:
                raise ValueError(f"{path}:{number}: a string continues no keyword")
            value = _string(line)
            if keyword == "msgctxt":
                current.msgctxt = (current.msgctxt or "") + value
            elif keyword == "msgid":
                current.msgid += value
            elif keyword == "msgid_plural":
                current.msgid_plural = (current.msgid_plural or "") + value
            else:
                current.msgstr[-1] += value
            continue
        name, _, rest = line.partition(" ")
        if name in ("msgctxt", "msgid") and current is not None and current.msgstr:
            finish()
        if current is None:
            current = Entry(msgid="", line=number, flags=flags, comments=comments)
            flags, comments = set(), []
        if name == "msgctxt":
            current.msgctxt = _string(rest)
        elif name == "msgid":
            current.msgid = _string(rest)
        elif name == "msgid_plural":
            current.msgid_plural = _string(rest)
        elif name == "msgstr" or re.fullmatch(r"msgstr\[\d+\]", name):
            current.msgstr.append(_string(rest))
            name = "msgstr"
        else:
            raise ValueError(f"{path}:{number}: unknown keyword {name!r}")
        keyword = name
    finish()
    return entries


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    lines = escaped.split("\n")
    if len(lines) == 1:
        return f'"{escaped}"'
    parts = [line + "\\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return '""\n' + "\n".join(f'"{part}"' for part in parts)


def write(path: Path, entries: list[Entry]) -> None:
    """Write ``entries`` (the header first) to ``path``."""
    blocks = []
    for entry in entries:
        lines = list(entry.comments)
        if entry.flags:
            lines.append("#, " + ", ".join(sorted(entry.flags, key=lambda flag: (flag != "fuzzy", flag))))
        if entry.msgctxt is not None:
            lines.append(f"msgctxt {_quote(entry.msgctxt)}")
        lines.append(f"msgid {_quote(entry.msgid)}")
        if entry.msgid_plural is not None:
            lines.append(f"msgid_plural {_quote(entry.msgid_plural)}")
            lines += [f"msgstr[{n}] {_quote(text)}" for n, text in enumerate(entry.msgstr)]
        else:
            lines.append(f"msgstr {_quote(entry.msgstr[0] if entry.msgstr else '')}")
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", "utf-8")
