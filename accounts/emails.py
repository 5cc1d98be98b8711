"""Every e-mail of the portal goes out here: one message is two templates, sent as plain text.

A message is named by its template prefix, ``<app>/email/<message>``; its subject is
``<app>/email/<message>_subject.txt`` (one line; whitespace is collapsed) and its body
``<app>/email/<message>_body.txt``. Both templates start with ``{% autoescape off %}``: the mail is
plain text, not HTML. The callers (:mod:`accounts.services`, :mod:`accounts.forms` for Django's
password reset, :mod:`enroll.notifications`) build the context; links in it are absolute
(:func:`accounts.services.absolute_url`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.core.mail import send_mail
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


def render(message: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """The subject (one line) and the body of ``message`` (``<app>/email/<message>``) for ``context``."""
    subject = " ".join(render_to_string(f"{message}_subject.txt", dict(context)).split())
    body = render_to_string(f"{message}_body.txt", dict(context))
    return subject, body


def send(message: str, *, to: str, context: Mapping[str, Any]) -> bool:
    """Send ``message`` to ``to``; True if it went out.

    A mail server problem (SMTP down, address refused, ...) is logged, never raised: the change that
    caused the mail stands, and the caller decides what to tell the person.
    """
    subject, body = render(message, context)
    try:
        send_mail(subject, body, None, [to])
    except Exception:
        logger.exception("could not send the e-mail '%s' to %s", subject, to)
        return False
    return True
