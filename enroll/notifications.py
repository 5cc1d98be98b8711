"""E-mails to certificate owners: each decision on their requests, and reminders before expiry.

Decisions are queued by :mod:`enroll.flows` (:func:`decision_on_commit`: a task for the worker, enqueued when
the deciding transaction commits); reminders are recorded as
:class:`~enroll.models.ExpiryReminder` rows in the same transaction that queues their e-mail, so each goes
out once however often :func:`send_expiry_reminders` runs (``manage.py notify_expiring``, hourly from cron).

Mail goes only to a verified address (:func:`accounts.services.verified_email`), in the owner's language
(:func:`accounts.services.mail_language`; the words the context carries are written in it too). Links are
absolute, built from ``settings.ENROLL_PUBLIC_URL``. Each mail is queued (:func:`accounts.emails.send`)
and sent by the worker; its context holds only JSON values (:func:`certificate_facts`,
:func:`request_facts`), never a model instance. Nothing here ever sees key material.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.text import slugify
from django.utils.translation import gettext, ngettext, pgettext_lazy
from django_tasks import task

from accounts import emails
from accounts import services as accounts_services
from accounts.services import mail_language, verified_email
from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, Revocation, RevocationReason
from ca.types import Account
from enroll.models import RENEWING_STATUSES, EnrollmentRequest, ExpiryReminder, ReminderDays, RequestStatus

logger = logging.getLogger(__name__)

#: Reminder thresholds, nearest first.
REMINDER_THRESHOLDS = sorted(int(days) for days in ReminderDays.values)


def absolute_url(name: str, **kwargs: Any) -> str:
    """The absolute link (``settings.ENROLL_PUBLIC_URL``) of the named page, for an e-mail."""
    return accounts_services.absolute_url(reverse(name, kwargs=kwargs or None))


def _send(message: str, *, to: str, context: dict[str, Any], language: str) -> bool:
    """Queue ``enroll/email/<message>`` in ``language`` (:func:`accounts.emails.send`; the worker logs a
    failure). True."""
    emails.send(
        f"enroll/email/{message}",
        to=to,
        context={**context, "portal_url": absolute_url("portal:dashboard")},
        language=language,
    )
    return True


#: A revocation reason as a sentence says it ("... was revoked (reason: ca compromise)").
REASON_WORDS = {
    RevocationReason.UNSPECIFIED: pgettext_lazy("revocation reason in a sentence", "unspecified"),
    RevocationReason.KEY_COMPROMISE: pgettext_lazy("revocation reason in a sentence", "key compromise"),
    RevocationReason.CA_COMPROMISE: pgettext_lazy("revocation reason in a sentence", "ca compromise"),
    RevocationReason.AFFILIATION_CHANGED: pgettext_lazy(
        "revocation reason in a sentence", "affiliation changed"
    ),
    RevocationReason.SUPERSEDED: pgettext_lazy("revocation reason in a sentence", "superseded"),
    RevocationReason.CESSATION_OF_OPERATION: pgettext_lazy(
        "revocation reason in a sentence", "cessation of operation"
    ),
    RevocationReason.CERTIFICATE_HOLD: pgettext_lazy("revocation reason in a sentence", "certificate hold"),
    RevocationReason.PRIVILEGE_WITHDRAWN: pgettext_lazy(
        "revocation reason in a sentence", "privilege withdrawn"
    ),
}


def reason_words(reason: str) -> str:
    """``reason`` (a :class:`RevocationReason` value) in words, in the active language."""
    words = REASON_WORDS.get(RevocationReason(reason)) if reason in RevocationReason.values else None
    return str(words) if words is not None else reason.replace("_", " ")


def certificate_facts(certificate: Certificate) -> dict[str, str]:
    """What mails say about a certificate: subject, serial, its end as ``YYYY-MM-DD HH:MM`` (UTC), and the
    owner's device name ("" for none)."""
    return {
        "subject": certificate.subject,
        "serial": certificate.serial,
        "not_after": f"{certificate.not_after.astimezone(dt.UTC):%Y-%m-%d %H:%M}",
        "device_name": certificate.device_name,
    }


def request_facts(request: EnrollmentRequest) -> dict[str, Any]:
    """What mails say about a request: number, reason, who decided (username or ""), the serial it renews,
    the owner's device name ("" for none)."""
    return {
        "pk": request.pk,
        "reason": request.reason,
        "decided_by": request.decided_by.get_username() if request.decided_by else "",
        "renewal_of": request.renewal_of.serial if request.renewal_of else "",
        "device_name": request.device_name,
    }


# --- decisions -------------------------------------------------------------------------------------

#: The message (``enroll/email/<message>_subject.txt`` and ``_body.txt``) of each decision.
_DECISIONS: dict[str, str] = {
    RequestStatus.ISSUED: "request_issued",
    RequestStatus.REJECTED: "request_rejected",
    RequestStatus.FAILED: "request_failed",
}


def decision_on_commit(*, request_id: int) -> None:
    """Once the deciding transaction commits (nothing if it rolls back), enqueue :func:`decision_mail` for
    the worker: the request that decided (an approval, a device's enrollment) only enqueues; the look-ups
    and the mail's words are the worker's."""
    emails.after_commit(decision_mail, request_id=request_id)


@task()
def decision_mail(request_id: int) -> bool:
    """The background task behind :func:`decision_on_commit`: :func:`notify_decision`."""
    return notify_decision(request_id=request_id)


def notify_decision(*, request_id: int) -> bool:
    """Tell the owner how their request was decided (issued, rejected or failed). True if mail was sent."""
    request = (
        EnrollmentRequest.objects.select_related("owner", "certificate", "renewal_of", "decided_by")
        .filter(pk=request_id)
        .first()
    )
    if request is None or request.status not in _DECISIONS:
        return False
    address = verified_email(request.owner)
    if address is None:
        logger.info("request #%s: no verified e-mail address, the owner is not notified", request.pk)
        return False
    context: dict[str, Any] = {
        "username": request.owner.get_username(),
        "request": request_facts(request),
        "request_url": absolute_url("portal:request-detail", pk=request.pk),
        "new_request_url": absolute_url("portal:request-new"),
    }
    if request.certificate is not None:
        context["certificate"] = certificate_facts(request.certificate)
        context["certificate_url"] = absolute_url("portal:certificate-detail", pk=request.certificate.pk)
    if request.renewal_of is not None:
        context["renewed_url"] = absolute_url("portal:certificate-detail", pk=request.renewal_of.pk)
    return _send(
        _DECISIONS[request.status], to=address, context=context, language=mail_language(request.owner)
    )


# --- revocations for key compromise ------------------------------------------------------------


def notify_key_compromise(
    *, revocations: Sequence[Revocation], by: Account | None = None, **_kwargs: object
) -> int:
    """Tell each owner which of their certificates were revoked because their key was reported compromised
    (``ca.signals.certificates_revoked``: the certificate named and every other one on the same key).

    One mail per owner with a verified address, listing their certificates; returns how many were sent.
    """
    owned: dict[int, list[Certificate]] = {}
    owners: dict[int, Account] = {}
    for revocation in revocations:
        certificate = revocation.certificate
        if certificate.owner is not None:
            owners[certificate.owner.pk] = certificate.owner
            owned.setdefault(certificate.owner.pk, []).append(certificate)
    sent = 0
    for owner_id, certificates in owned.items():
        owner = owners[owner_id]
        address = verified_email(owner)
        if address is None:
            logger.info("certificates of %s revoked for key compromise: no verified e-mail address", owner)
            continue
        items = [
            {"certificate": certificate_facts(c), "url": absolute_url("portal:certificate-detail", pk=c.pk)}
            for c in certificates
        ]
        context = {
            "username": owner.get_username(),
            "certificates": items,
            "by": by.get_username() if by is not None else "",
            "new_request_url": absolute_url("portal:request-new"),
        }
        sent += _send("key_compromise_revoked", to=address, context=context, language=mail_language(owner))
    return sent


# --- an issuing CA revoked --------------------------------------------------------------------


def notify_ca_revoked(
    *, ca: CertificateAuthority, by: Account | None = None, now: dt.datetime | None = None, **_kwargs: object
) -> int:
    """Tell every owner of a certificate that the revoked CA (or a CA below it) issued, and that was still
    valid, that it no longer works (``ca.signals.ca_revoked``); one mail per owner with a verified address,
    listing their certificates. Returns how many were queued."""
    now = now or utcnow()
    below = [ca.pk]
    frontier = [ca.pk]
    while frontier:  # the CAs under the revoked one lose their trust path too
        frontier = list(
            CertificateAuthority.objects.filter(parent_id__in=frontier).values_list("pk", flat=True)
        )
        below += frontier
    affected = (
        Certificate.objects.issued()
        .valid_at(now)
        .filter(ca_id__in=below, owner__isnull=False)
        .select_related("owner")
        .order_by("owner_id", "not_after")
    )
    owned: dict[int, list[Certificate]] = {}
    for certificate in affected:
        assert certificate.owner_id is not None
        owned.setdefault(certificate.owner_id, []).append(certificate)
    sent = 0
    for certificates in owned.values():
        owner = certificates[0].owner
        assert owner is not None
        address = verified_email(owner)
        if address is None:
            logger.info(
                "certificates of %s stopped working with CA %s: no verified e-mail address", owner, ca.slug
            )
            continue
        language = mail_language(owner)
        with emails.in_language(language):
            reason = reason_words(ca.revocation_reason)
        context = {
            "username": owner.get_username(),
            "ca_name": ca.name,
            "reason": reason,
            "certificates": [
                {
                    "certificate": certificate_facts(c),
                    "url": absolute_url("portal:certificate-detail", pk=c.pk),
                }
                for c in certificates
            ],
            "new_request_url": absolute_url("portal:request-new"),
        }
        sent += _send("ca_revoked", to=address, context=context, language=language)
    return sent


# --- expiry reminders ------------------------------------------------------------------------------


def due_threshold(remaining: dt.timedelta) -> int | None:
    """The nearest reminder threshold (in days) that ``remaining`` has reached, or None."""
    for days in REMINDER_THRESHOLDS:
        if remaining <= dt.timedelta(days=days):
            return days
    return None


def reminder_candidates(*, now: dt.datetime) -> QuerySet[Certificate]:
    """Owned certificates valid at ``now`` (so unrevoked), not yet renewed, that expire within the longest
    threshold."""
    return (
        Certificate.objects.issued()
        .valid_at(now)
        .filter(owner__isnull=False, not_after__lte=now + dt.timedelta(days=max(REMINDER_THRESHOLDS)))
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
    language = mail_language(certificate.owner) if certificate.owner is not None else ""
    with emails.in_language(language):
        if days_left < 1:
            when = gettext("in less than a day")
        else:
            when = ngettext("in %(days)d day", "in %(days)d days", days_left) % {"days": days_left}
    context = {
        "username": certificate.owner.get_username() if certificate.owner else "",
        "certificate": certificate_facts(certificate),
        "when": when,
        "certificate_url": absolute_url("portal:certificate-detail", pk=certificate.pk),
        "renew_url": absolute_url("portal:certificate-renew", pk=certificate.pk),
        "key_name": slugify(certificate.owner.get_username() if certificate.owner else "") or "my",
    }

    def send() -> None:
        _send("expiry_reminder", to=address, context=context, language=language)

    return send
