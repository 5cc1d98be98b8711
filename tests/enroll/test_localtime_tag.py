"""{% when %} (enroll/templatetags/portal_time.py): a moment in UTC inside <time>, for localtime.js to show
in the person's time zone, the UTC time kept in the title."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.contrib.staticfiles import finders
from django.template import Context, Template, TemplateSyntaxError

MOMENT = dt.datetime(2026, 12, 7, 23, 30, 15, tzinfo=dt.UTC)


def render(source: str, **context: object) -> str:
    return Template("{% load portal_time %}" + source).render(Context(context))


@pytest.mark.parametrize(
    ("tag", "value", "expected"),
    [
        (
            "{% when value %}",
            MOMENT,
            '<time datetime="2026-12-07T23:30:15Z" title="7 December 2026, 23:30 UTC" '
            'data-localtime="datetime">2026-12-07 23:30 UTC</time>',
        ),
        (
            '{% when value "date" %}',
            MOMENT,
            '<time datetime="2026-12-07T23:30:15Z" title="7 December 2026, 23:30 UTC" '
            'data-localtime="date">2026-12-07</time>',
        ),
        (
            '{% when value "time" %}',
            MOMENT,
            '<time datetime="2026-12-07T23:30:15Z" title="7 December 2026, 23:30 UTC" '
            'data-localtime="time">23:30 UTC</time>',
        ),
        # Another zone is written in UTC; a naive datetime is taken as UTC.
        (
            "{% when value %}",
            MOMENT.astimezone(zoneinfo.ZoneInfo("Pacific/Auckland")),
            '<time datetime="2026-12-07T23:30:15Z" title="7 December 2026, 23:30 UTC" '
            'data-localtime="datetime">2026-12-07 23:30 UTC</time>',
        ),
        (
            "{% when value %}",
            MOMENT.replace(tzinfo=None),
            '<time datetime="2026-12-07T23:30:15Z" title="7 December 2026, 23:30 UTC" '
            'data-localtime="datetime">2026-12-07 23:30 UTC</time>',
        ),
        # A plain date has no zone: written as it is, not rewritten by the script.
        ("{% when value %}", dt.date(2026, 12, 7), '<time datetime="2026-12-07">2026-12-07</time>'),
        ("{% when value %}", None, ""),
        ("{% when value %}", "", ""),
    ],
)
def test_it_writes_the_moment_in_utc_inside_a_time_element(tag: str, value: object, expected: str) -> None:
    assert render(tag, value=value) == expected


def test_it_refuses_an_unknown_style_naming_the_styles() -> None:
    with pytest.raises(TemplateSyntaxError, match="use one of date, datetime, time"):
        render('{% when value "week" %}', value=MOMENT)


def test_the_base_page_loads_the_script_that_rewrites_the_times() -> None:
    script = finders.find("portal/localtime.js")
    assert script is not None
    assert "portal/localtime.js" in Template("{% include 'base.html' %}").render(Context({}))
