"""``{% when value %}``: a moment as the portal shows it, in the person's time zone.

The server writes the time in UTC inside ``<time datetime="2026-12-07T12:00:00Z" title="7 December 2026,
12:00 UTC">2026-12-07 12:00 UTC</time>``; ``static/portal/localtime.js`` rewrites the text into the
browser's time zone and language and keeps UTC in the title (shown on hover). Without JavaScript the UTC
text stays. Styles (the second argument):

* ``"datetime"`` (default): date and time, ``2026-12-07 12:00 UTC``;
* ``"date"``: the date only, ``2026-12-07`` (in the person's zone: near midnight it may be the next day);
* ``"time"``: the time only, ``12:00 UTC``.

``None`` (or an empty value) writes nothing. A naive datetime is taken as UTC; a plain date is written as
it is (no zone to convert).
"""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

#: Server-side text of each style (strftime), always in UTC.
STYLES = {
    "datetime": "%Y-%m-%d %H:%M UTC",
    "date": "%Y-%m-%d",
    "time": "%H:%M UTC",
}


def as_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _utc_words(moment: dt.datetime) -> str:
    """The hover text: ``7 December 2026, 12:00 UTC``."""
    return f"{moment.day} {moment:%B %Y, %H:%M} UTC"


@register.simple_tag
def when(value: object, style: str = "datetime") -> SafeString | str:
    if style not in STYLES:
        raise template.TemplateSyntaxError(
            f"when: unknown style {style!r}; use one of {', '.join(sorted(STYLES))}"
        )
    if isinstance(value, dt.datetime):
        moment = as_utc(value)
        return format_html(
            '<time datetime="{}" title="{}" data-localtime="{}">{}</time>',
            moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            _utc_words(moment),
            style,
            moment.strftime(STYLES[style]),
        )
    if isinstance(value, dt.date):
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), value.isoformat())
    return ""
