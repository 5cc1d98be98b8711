"""Every e-mail of the portal goes out here, from a background task, never in the request that caused it.

A message is named by its template prefix, ``<app>/email/<message>``; its subject is
``<app>/email/<message>_subject.txt`` (one line; whitespace is collapsed) and its body
``<app>/email/<message>_body.txt``. Both templates start with ``{% autoescape off %}``: the mail is
plain text, not HTML.

:func:`send` queues a message: once the current transaction commits (at once outside one), the task
:func:`deliver` is enqueued with django-tasks (``settings.TASKS``: the database backend, run by
``manage.py db_worker``; docs/MAIL.md). A change that is rolled back sends nothing. The task gets only
the message name, the recipient and a context of JSON values (strings, numbers, lists, dicts: no model
instances, no dates), and renders the templates itself. The callers (:mod:`accounts.services`,
:mod:`enroll.notifications`) build the context; links in it are absolute
(:func:`accounts.services.absolute_url`), dates already written out.

A mail is written in its recipient's language (``language``: :meth:`accounts.models.Profile.mail_language`),
whatever the language of the page or command that caused it: the task renders under
``translation.override``, and callers write the context's words (dates, "in 3 days") under
:func:`in_language` too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import translation
from django_tasks import task
from django_tasks.base import Task

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@contextmanager
def in_language(language: str) -> Iterator[None]:
    """Write in ``language`` (a code of ``settings.LANGUAGES``; "" or an unknown one: the site's)."""
    with translation.override(language if language in dict(settings.LANGUAGES) else settings.LANGUAGE_CODE):
        yield


def render(message: str, context: Mapping[str, Any], *, language: str = "") -> tuple[str, str]:
    """The subject (one line) and the body of ``message`` (``<app>/email/<message>``) for ``context``,
    in ``language`` (:func:`in_language`)."""
    with in_language(language):
        subject = " ".join(render_to_string(f"{message}_subject.txt", dict(context)).split())
        body = render_to_string(f"{message}_body.txt", dict(context))
    return subject, body


def send_now(message: str, *, to: str, context: Mapping[str, Any], language: str = "") -> bool:
    """Render and send ``message`` to ``to`` in this process, in ``language``; True if it went out. Only
    tasks call this.

    A mail server problem (SMTP down, address refused, ...) is logged, never raised: the change that
    caused the mail stands, and the worker goes on with the next task.
    """
    try:
        subject, body = render(message, context, language=language)
    except Exception:
        logger.exception("could not write the e-mail '%s' to %s", message, to)
        return False
    try:
        send_mail(subject, body, None, [to])
    except Exception:
        logger.exception("could not send the e-mail '%s' to %s", subject, to)
        return False
    return True


@task()
def deliver(message: str, to: str, context: dict[str, Any], language: str = "") -> bool:
    """The background task that sends one message (:func:`send_now`; a failure is logged, not raised)."""
    return send_now(message, to=to, context=context, language=language)


def enqueue(task_: Task[P, T], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Enqueue ``task_`` now (called on commit by :func:`after_commit`)."""
    task_.enqueue(*args, **kwargs)


def after_commit(task_: Task[P, T], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Enqueue ``task_`` with these arguments once the current transaction commits (at once outside one).

    The arguments must be JSON values: they are checked here, so a model instance in a context fails in
    the test that sends it, not in the worker. An enqueue that fails (the database went away) is logged
    by Django (``robust``); the request that caused it still gets its answer.
    """
    json.dumps([args, kwargs])  # TypeError for anything the database backend could not store
    transaction.on_commit(partial(enqueue, task_, *args, **kwargs), robust=True)


def send(message: str, *, to: str, context: Mapping[str, Any], language: str = "") -> None:
    """Queue ``message`` to ``to``, written in ``language`` (see the module's docstring); the task sends
    it after the commit."""
    after_commit(deliver, message=message, to=to, context=dict(context), language=language)
