"""Development mail (DEBUG only): every message the portal sends is printed to the console, as before, and
kept as a file in ``settings.ENROLL_DEV_MAIL_DIR`` so that the page ``/dev/mail/`` can list it.

The mail worker (``manage.py db_worker``) sends the mail and the web server shows it: two processes, so the
messages live in files, one ``.eml`` file each (RFC 5322, as sent), newest last by name. Nothing here is
used with DEBUG off: the settings choose :class:`ConsoleAndFileBackend` only in development, and the page
answers 404 outside it.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage as ParsedMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.console import EmailBackend as ConsoleBackend
from django.core.mail.message import EmailMessage

from ca.clock import utcnow

#: The page lists this many messages, newest first; older files stay on disk until ``var`` is deleted.
SHOWN = 100


def mail_dir() -> Path:
    return Path(settings.ENROLL_DEV_MAIL_DIR)


class ConsoleAndFileBackend(ConsoleBackend):
    """Django's console backend that also keeps each message in :func:`mail_dir` (for ``/dev/mail/``)."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = super().send_messages(email_messages)
        for message in email_messages:
            if message.recipients():
                keep(message)
        return sent


def keep(message: EmailMessage, *, now: dt.datetime | None = None) -> Path:
    """Write ``message`` to a new file in :func:`mail_dir`, named so that names sort by time."""
    folder = mail_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or utcnow()).strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"{stamp}-{secrets.token_hex(4)}.eml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(message.message().as_bytes(linesep="\n"))
    return path


@dataclass(frozen=True)
class KeptMail:
    """One kept message as the page shows it."""

    name: str
    sent_at: dt.datetime | None
    to: str
    sender: str
    subject: str
    body: str


def _body(parsed: ParsedMessage) -> str:
    part = parsed.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""


def read(path: Path) -> KeptMail:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, ParsedMessage)
    date = parsed.get("Date")
    try:
        sent_at = parsedate_to_datetime(str(date)).astimezone(dt.UTC) if date else None
    except (TypeError, ValueError):
        sent_at = None
    return KeptMail(
        name=path.name,
        sent_at=sent_at,
        to=str(parsed.get("To", "")),
        sender=str(parsed.get("From", "")),
        subject=str(parsed.get("Subject", "")),
        body=_body(parsed),
    )


def kept_mails(limit: int = SHOWN) -> tuple[list[KeptMail], int]:
    """The newest ``limit`` kept messages, newest first, and how many there are in all."""
    try:
        paths = sorted(mail_dir().glob("*.eml"), reverse=True)
    except OSError:
        return [], 0
    mails = []
    for path in paths[:limit]:
        try:
            mails.append(read(path))
        except (OSError, ValueError):
            continue  # removed meanwhile, or not a message: the page shows the others
    return mails, len(paths)
