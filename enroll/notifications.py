"""E-mails to certificate owners: each decision on their requests, and reminders before expiry.

Decisions are queued by :mod:`enroll.flows` with ``transaction.on_commit``; reminders are recorded as
:class:`~enroll.models.ExpiryReminder` rows in the same transaction that queues their e-mail, so each goes
out once however often :func:`send_expiry_reminders` runs (``manage.py notify_expiring``, hourly from cron).

Mail goes only to a verified address (:func:`accounts.services.verified_email`). Links are absolute, built
from ``settings.ENROLL_PUBLIC_URL``. Nothing here ever sees key material.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify

from accounts import services as accounts_services
from accounts.services import verified_email
from ca.clock import utcnow
from ca.models import Certificate
from enroll.models import RENEWING_STATUSES, EnrollmentRequest, ExpiryReminder, ReminderDays, RequestStatus

logger = logging.getLogger(__name__)

#: Reminder thresholds, nearest first.
REMINDER_THRESHOLDS = sorted(int(days) for days in ReminderDays.values)


def absolute_url(name: str, **kwargs: Any) -> str:
    """The absolute link (``settings.ENROLL_PUBLIC_URL``) of the named page, for an e-mail."""
    return accounts_services.absolute_url(reverse(name, kwargs=kwargs or None))


def _send(*, to: str, subject: str, template: str, context: dict[str, Any]) -> bool:
    """Send one plain-text e-mail; a mail server problem is logged, never raised (the change is committed)."""
    body = render_to_string(template, {**context, "portal_url": absolute_url("portal:dashboard")})
    try:
        send_mail(subject, body, None, [to])
    except Exception:  # SMTP down, refused address, ...: the decision stands, the operator reads the log
        logger.exception("could not send the e-mail '%s' to %s", subject, to)
        return False
    return True


# --- decisions -------------------------------------------------------------------------------------

_DECISIONS: dict[str, tuple[str, str]] = {
    RequestStatus.ISSUED: ("Your certificate is ready (request #{pk})", "enroll/email/request_issued.txt"),
    RequestStatus.REJECTED: (
        "Your certificate request #{pk} was rejected",
        "enroll/email/request_rejected.txt",
    ),
    RequestStatus.FAILED: (
        "Your certificate request #{pk} could not be issued",
        "enroll/email/request_failed.txt",
    ),
}


def notify_decision(*, request_id: int) -> bool:
    """Tell the owner how their request was decided (issued, rejected or failed). True if mail was sent."""
    request = (
        EnrollmentRequest.objects.select_related("owner", "certificate", "renewal_of")
        .filter(pk=request_id)
        .first()
    )
    if request is None or request.status not in _DECISIONS:
        return False
    address = verified_email(request.owner)
    if address is None:
        logger.info("request #%s: no verified e-mail address, the owner is not notified", request.pk)
        return False
    subject, template = _DECISIONS[request.status]
    context: dict[str, Any] = {
        "user": request.owner,
        "request": request,
        "request_url": absolute_url("portal:request-detail", pk=request.pk),
        "new_request_url": absolute_url("portal:request-new"),
    }
    if request.certificate is not None:
        context["certificate"] = request.certificate
        context["certificate_url"] = absolute_url("portal:certificate-detail", pk=request.certificate.pk)
    if request.renewal_of is not None:
        context["renewed_url"] = absolute_url("portal:certificate-detail", pk=request.renewal_of.pk)
    return _send(to=address, subject=subject.format(pk=request.pk), template=template, context=context)


# --- expiry reminders ------------------------------------------------------------------------------


def due_threshold(remaining: dt.timedelta) -> int | None:
    """The nearest reminder threshold (in days) that ``remaining`` has reached, or None."""
    for days in REMINDER_THRESHOLDS:
        if remaining <= dt.timedelta(days=days):
            return days
    return None


def reminder_candidates(*, now: dt.datetime) -> QuerySet[Certificate]:
    """Valid, unrevoked, not yet renewed, owned certificates that expire within the longest threshold."""
    return (
        Certificate.objects.filter(
            owner__isnull=False,
            not_before__lte=now,
            not_after__gt=now,
            not_after__lte=now + dt.timedelta(days=max(REMINDER_THRESHOLDS)),
            revocation__isnull=True,
        )
        .exclude(der=b"")
        .exclude(renewals__status__in=RENEWING_STATUSES)
        .select_related("owner")
        .prefetch_related("expiry_reminders")
        .order_by("not_after", "pk")
    )


def already_reminded(certificate: Certificate, threshold: int) -> bool:
    """Whether this reminder (or a nearer one, if the clock went back) was sent."""
    return any(reminder.days <= threshold for reminder in certificate.expiry_reminders.all())


def send_expiry_reminders(*, now: dt.datetime | None = None) -> int:
    """Queue the reminders that are due; return how many were queued (sent as each one commits).

    A certificate gets the reminder of the nearest threshold it has reached (30, 7 or 1 days), once: the
    reminder row and its e-mail commit together, and a unique constraint turns a concurrent second run
    into a no-op. Reminders of a farther threshold that were missed (the command did not run) are not
    sent late.
    """
    now = now or utcnow()
    queued = 0
    for certificate in reminder_candidates(now=now):
        threshold = due_threshold(certificate.not_after - now)
        if threshold is None:
            continue
        if already_reminded(certificate, threshold):
            continue
        assert certificate.owner is not None
        address = verified_email(certificate.owner)
        if address is None:
            continue  # tried again on the next run: the owner may verify the address meanwhile
        try:
            with transaction.atomic():
                ExpiryReminder.objects.create(certificate=certificate, days=threshold, sent_at=now)
                transaction.on_commit(
                    _reminder_sender(certificate=certificate, address=address, now=now), robust=True
                )
        except IntegrityError:  # another run sent this one meanwhile
            continue
        queued += 1
    return queued


def _reminder_sender(*, certificate: Certificate, address: str, now: dt.datetime) -> Callable[[], None]:
    remaining = certificate.not_after - now
    days_left = remaining.days
    when = "in less than a day" if days_left < 1 else f"in {days_left} day{'s' if days_left != 1 else ''}"
    context = {
        "user": certificate.owner,
        "certificate": certificate,
        "when": when,
        "certificate_url": absolute_url("portal:certificate-detail", pk=certificate.pk),
        "renew_url": absolute_url("portal:certificate-renew", pk=certificate.pk),
        "key_name": slugify(certificate.owner.get_username() if certificate.owner else "") or "my",
    }
    subject = f"Your client certificate expires {when}"

    def send() -> None:
        _send(to=address, subject=subject, template="enroll/email/expiry_reminder.txt", context=context)

    return send
