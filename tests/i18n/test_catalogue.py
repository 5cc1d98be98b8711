"""The German catalogue is complete (part of make test): every string marked in the code and templates is in
enroll/locale/de/LC_MESSAGES/django.po, none is untranslated or fuzzy, and no translation loses or changes
a placeholder. To fix a failure: `make catalogue` (manage.py makemessages, enroll/management/commands/),
translate what it added, remove the fuzzy marks after checking them, `make messages`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.programs import need_program
from tests.i18n import po
from tests.i18n.conftest import CATALOGUE, ROOT

FIX = "run `make catalogue`, translate the new entries in enroll/locale/de/LC_MESSAGES/django.po"
#: What the catalogue is made from (manage.py makemessages reads these; the rest holds no portal strings).
SOURCES = ("accounts", "enroll", "ca", "templates", "manage.py")


def catalogue_problems(entries: list[po.Entry]) -> list[str]:
    """Every entry (the header aside) that is untranslated, fuzzy, or whose msgstr loses or changes a
    python-format placeholder of its msgid (each plural form against msgid or msgid_plural)."""
    problems = []
    for entry in entries:
        if entry.msgid == "" and entry.msgctxt is None:
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy (check the suggestion, then remove the mark): {entry.where()}")
        if not entry.translated:
            problems.append(f"untranslated: {entry.where()}")
            continue
        sources = [entry.msgid] + [entry.msgid_plural or entry.msgid] * (len(entry.msgstr) - 1)
        for form, (source, text) in enumerate(zip(sources, entry.msgstr, strict=True)):
            if po.placeholders(text) != po.placeholders(source):
                problems.append(
                    f"placeholders {po.placeholders(text)} in msgstr[{form}] instead of "
                    f"{po.placeholders(source)}: {entry.where()}"
                )
    return problems


def test_it_has_every_string_the_code_and_templates_mark(tmp_path: Path) -> None:
    """makemessages on a copy of the sources (never on the working tree's catalogue) finds nothing that
    the committed catalogue lacks, and the catalogue keeps nothing the sources no longer mark."""
    for program in ("xgettext", "msguniq", "msgmerge"):
        need_program(program)
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "locale", "*.mo")
            )
        else:
            shutil.copy2(source, tmp_path / name)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "enroll.settings",
        "DJANGO_DEBUG": "true",
        "ENROLL_DATA_DIR": str(tmp_path / "var"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "makemessages", "--locale", "de"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fresh = tmp_path / CATALOGUE.relative_to(ROOT)
    assert fresh.exists(), f"makemessages wrote no catalogue at {fresh}: {result.stdout}"

    marked = {entry.key for entry in po.read(fresh)}
    committed = {entry.key for entry in po.read(CATALOGUE)}
    missing = sorted(str(key) for key in marked - committed)
    stale = sorted(str(key) for key in committed - marked)
    assert not missing, f"{len(missing)} marked strings are not in the catalogue ({FIX}): {missing}"
    assert not stale, f"{len(stale)} catalogue entries are marked nowhere any more ({FIX}): {stale}"


def test_every_entry_is_translated_not_fuzzy_and_keeps_its_placeholders() -> None:
    entries = po.read(CATALOGUE)
    assert len(entries) > 200  # the header and the portal's strings: the parser read the whole file
    problems = catalogue_problems(entries)
    assert not problems, f"{len(problems)} problems in {CATALOGUE.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_msgfmt_checks_the_catalogue_and_counts_nothing_untranslated_or_fuzzy(tmp_path: Path) -> None:
    msgfmt = need_program("msgfmt")
    result = subprocess.run(
        [msgfmt, "--check", "--statistics", "-o", str(tmp_path / "django.mo"), str(CATALOGUE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "translated message" in result.stderr
    assert "untranslated" not in result.stderr, result.stderr
    assert "fuzzy" not in result.stderr, result.stderr


def _entry(msgid: str, *msgstr: str, plural: str | None = None, fuzzy: bool = False) -> po.Entry:
    return po.Entry(
        msgid=msgid, msgid_plural=plural, msgstr=list(msgstr), flags={"fuzzy"} if fuzzy else set()
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (_entry("Log in", ""), "untranslated"),
        (_entry("Log in", "Anmelden", fuzzy=True), "fuzzy"),
        (_entry("Hello %(username)s,", "Hallo,"), "placeholders"),
        (_entry("Hello %(username)s,", "Hallo %(user)s,"), "placeholders"),
        (_entry("Hello %(username)s,", "Hallo %(username)d,"), "placeholders"),
        (_entry("%(count)d day", "%(count)d Tag", "", plural="%(count)d days"), "untranslated"),
        (_entry("%(count)d day", "%(count)d Tag", "viele Tage", plural="%(count)d days"), "placeholders"),
    ],
    ids=["untranslated", "fuzzy", "placeholder-lost", "placeholder-renamed", "placeholder-retyped",
         "plural-form-untranslated", "plural-form-lost-placeholder"],
)  # fmt: skip
def test_the_check_finds_each_kind_of_problem(entry: po.Entry, problem: str) -> None:
    found = catalogue_problems([entry])
    assert len(found) == 1, found
    assert found[0].startswith(problem), found


def test_the_check_passes_a_good_entry_and_a_literal_percent_sign() -> None:
    good = [
        _entry("Hello %(username)s,", "Hallo %(username)s,"),
        _entry("%(count)d day", "%(count)d Tag", "%(count)d Tage", plural="%(count)d days"),
        _entry("100%% sure", "100%% sicher"),
    ]
    assert catalogue_problems(good) == []
