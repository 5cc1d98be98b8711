"""Django's makemessages with the portal's defaults: `make catalogue` (`manage.py makemessages`) brings the
catalogue up to date.

The one catalogue is ``enroll/locale/<language>/LC_MESSAGES/django.po`` (``settings.LOCALE_PATHS``): the
strings marked in ``accounts``, ``enroll``, ``ca`` and ``templates`` all go there. Without ``--locale``
(``-l``) it updates every language of ``settings.LANGUAGES`` but English (the source language); folders
that hold no portal code (tests, benchmarks, data, vendored files, build output) are skipped; obsolete
entries are dropped and locations name only the file, so a re-run changes the catalogue only where the
strings changed. Then translate the new entries (``msgstr``, and remove any ``#, fuzzy`` mark after checking
the suggestion) and run ``make messages``; ``tests/i18n/test_catalogue.py`` checks all of it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.commands import makemessages

#: Folders (relative to the project's top) that hold no strings of the portal; static/portal stays in for
#: ``-d djangojs`` (strings of the portal's own scripts).
IGNORED = [
    "tests",
    "bench",
    "var",
    "test-artifacts",
    "build",
    "static/vendor",
    "docs",
    "*.egg-info",
    "node_modules",
]


def translated_languages() -> list[str]:
    """The catalogue's languages: ``settings.LANGUAGES`` but the source language, English."""
    return [code for code, _name in settings.LANGUAGES if code != "en"]


class Command(makemessages.Command):
    help = (
        "Update the portal's catalogue (enroll/locale) from the strings marked in the code and templates; "
        "by default for every language but English."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["locale"] and not options["all"] and not options["exclude"]:
            options["locale"] = translated_languages()
        options["ignore_patterns"] = [*options["ignore_patterns"], *IGNORED]
        options["no_obsolete"] = True
        if options["add_location"] is None:
            options["add_location"] = "file"
        super().handle(*args, **options)
