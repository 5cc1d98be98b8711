"""E-mails to approvers: each new request, or an hourly digest of them, and reminders past the service level.

Approvers are active staff who may decide requests (:func:`accounts.models.can_approve`: the permission
``enroll.change_enrollmentrequest``, which active superusers have). How each hears of new requests is
``settings.ENROLL_APPROVER_MAIL`` (``each``, ``digest`` or ``off``) unless they chose otherwise on their
profile page (:class:`accounts.models.ApproverMail`).

- **each**: a submission queues :func:`announce_request` on its commit (:func:`announce_on_commit`, from
  :mod:`enroll.flows.submission`); the worker finds the approvers and queues one mail to each. Nothing of
  this runs in the submitter's request beyond enqueuing that one task.
- **digest**: :func:`send_digests` (``manage.py notify_approvers``, hourly from cron) sends each approver
  one mail listing the waiting requests they were not told about yet.
- **reminders**: :func:`send_reminders` (the same command) sends each approver who gets mail (each or
  digest) one mail listing the requests that have waited longer than
  ``settings.ENROLL_APPROVAL_SERVICE_HOURS`` and that they were not reminded of yet.

Every mail is recorded per approver and request (:class:`~enroll.models.ApproverNotice`, NEW or OVERDUE)
in the transaction that queues it, and a unique constraint makes each go out once however often the
command (or a task) runs. Nobody is told about their own request; mail goes only to verified addresses
(:func:`accounts.services.verified_email`), in each approver's language (:attr:`Approver.language`);
links lead to the request's page in the admin.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils.translation import gettext, ngettext
from django_tasks import task

from accounts import emails
from accounts import services as accounts_services
from accounts.models import APPROVE_PERMISSION, ApproverMail, Profile, can_approve
from accounts.services import verified_email
from ca.clock import utcnow
from ca.types import Account
from enroll.models import ApproverNotice, ApproverNoticeKind, EnrollmentRequest, RequestStatus

logger = logging.getLogger(__name__)

#: The permission that makes staff approvers (the same as ``enroll.admin.DECIDE_PERMISSION``).
DECIDE_PERMISSION = APPROVE_PERMISSION


@dataclass(frozen=True)
class Approver:
    """An approver who gets mail: the account, its verified address, how they hear of new requests and the
    language their mails are written in."""

    account: Account
    address: str
    choice: ApproverMail
    language: str = ""


def site_choice() -> ApproverMail:
    """``settings.ENROLL_APPROVER_MAIL`` as a choice (``off`` is :attr:`ApproverMail.NONE`)."""
    site = str(settings.ENROLL_APPROVER_MAIL)
    return ApproverMail.NONE if site == "off" else ApproverMail(site)


def mail_choice(chosen: str) -> ApproverMail:
    """An approver's effective choice: their own (``chosen``, from their profile), else the site's."""
    return ApproverMail(chosen) if chosen else site_choice()


def approver_accounts() -> list[Account]:
    """Active staff who may decide requests (superusers included), by id."""
    app_label, codename = DECIDE_PERMISSION.split(".")
    may = Q(is_superuser=True)
    permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
    if permission is not None:
        may |= Q(user_permissions=permission) | Q(groups__permissions=permission)
    candidates = (
        get_user_model()._default_manager.filter(is_active=True, is_staff=True).filter(may).distinct()
    )
    # The query finds them; the authentication backends (has_perm) have the last word.
    return [account for account in candidates.order_by("pk") if can_approve(account)]


def mailed_approvers() -> list[Approver]:
    """The approvers who get mail about requests: a verified address, and a choice other than none."""
    accounts = approver_accounts()
    profiles = {
        profile.user_id: profile for profile in Profile.objects.filter(user__in=[a.pk for a in accounts])
    }
    approvers = []
    for account in accounts:
        profile = profiles.get(account.pk) or Profile(user=account)
        choice = mail_choice(profile.approver_mail)
        if choice == ApproverMail.NONE:
            continue
        address = verified_email(account)
        if address is None:
            logger.info("approver %s has no verified e-mail address and is not told of requests", account)
            continue
        approvers.append(
            Approver(account=account, address=address, choice=choice, language=profile.mail_language())
        )
    return approvers


# --- what the mails say ----------------------------------------------------------------------------


def _minutes(number: int) -> str:
    return ngettext("%(count)d minute", "%(count)d minutes", number) % {"count": number}


def _hours(number: int) -> str:
    return ngettext("%(count)d hour", "%(count)d hours", number) % {"count": number}


def _days(number: int) -> str:
    return ngettext("%(count)d day", "%(count)d days", number) % {"count": number}


def waited_words(waited: dt.timedelta) -> str:
    """How long a request has waited, in words of the active language: "less than a minute", "12 minutes",
    "5 hours", "2 days 3 hours"."""
    minutes = max(0, int(waited.total_seconds() // 60))
    if minutes < 1:
        return gettext("less than a minute")
    if minutes < 60:
        return _minutes(minutes)
    hours = minutes // 60
    if hours < 24:
        return _hours(hours)
    days, hours = divmod(hours, 24)
    if not hours:
        return _days(days)
    return f"{_days(days)} {_hours(hours)}"


def admin_url(request: EnrollmentRequest) -> str:
    """The absolute link of the request's page in the admin, where it is approved or rejected."""
    return accounts_services.absolute_url(reverse("admin:enroll_enrollmentrequest_change", args=[request.pk]))


def queue_url() -> str:
    """The absolute link of the admin's list of the requests waiting for a decision."""
    path = reverse("admin:enroll_enrollmentrequest_changelist")
    return accounts_services.absolute_url(f"{path}?status__exact={RequestStatus.SUBMITTED}")


def request_facts(request: EnrollmentRequest, *, now: dt.datetime) -> dict[str, Any]:
    """What approvers' mails say about a request (JSON values only): number, requester, kind, key, device
    name, the serial it renews, when it came, how long it has waited, and its admin link."""
    return {
        "pk": request.pk,
        "requester": request.owner.get_username(),
        "kind": request.get_kind_display(),
        "key": request.key_description,
        "device_name": request.device_name,
        "renewal_of": request.renewal_of.serial if request.renewal_of is not None else "",
        "submitted": f"{request.created_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "waited": waited_words(now - request.created_at),
        "url": admin_url(request),
    }


def _facts(
    approver: Approver, requests: Sequence[EnrollmentRequest], *, now: dt.datetime
) -> list[dict[str, Any]]:
    """:func:`request_facts` of each request, in the approver's language."""
    with emails.in_language(approver.language):
        return [request_facts(request, now=now) for request in requests]


def _context(approver: Approver, **context: Any) -> dict[str, Any]:
    return {
        "username": approver.account.get_username(),
        "choice": str(approver.choice),
        "service_hours": int(settings.ENROLL_APPROVAL_SERVICE_HOURS),
        "queue_url": queue_url(),
        "profile_url": accounts_services.absolute_url(reverse("accounts:profile")),
        "portal_url": accounts_services.absolute_url(reverse("portal:dashboard")),
        **context,
    }


def _record_and_send(
    message: str,
    *,
    approver: Approver,
    requests: Sequence[EnrollmentRequest],
    kind: ApproverNoticeKind,
    now: dt.datetime,
    context: dict[str, Any],
) -> bool:
    """Record that ``approver`` was told (``kind``) about ``requests`` and queue the mail, in one
    transaction; False (nothing sent) if a concurrent run told them about one of these already."""
    try:
        with transaction.atomic():
            ApproverNotice.objects.bulk_create(
                ApproverNotice(request=request, approver=approver.account, kind=kind, sent_at=now)
                for request in requests
            )
            emails.send(
                f"enroll/email/{message}", to=approver.address, context=context, language=approver.language
            )
    except IntegrityError:
        return False
    return True


def _waiting() -> list[EnrollmentRequest]:
    """The requests waiting for a decision, oldest first."""
    return list(
        EnrollmentRequest.objects.filter(status=RequestStatus.SUBMITTED)
        .select_related("owner", "renewal_of")
        .order_by("created_at", "pk")
    )


def _told(approver: Approver, kind: ApproverNoticeKind, requests: Sequence[EnrollmentRequest]) -> set[int]:
    """The ids of ``requests`` that ``approver`` was told about (``kind``) already."""
    return set(
        ApproverNotice.objects.filter(
            approver=approver.account, kind=kind, request__in=[r.pk for r in requests]
        ).values_list("request_id", flat=True)
    )


# --- each new request ------------------------------------------------------------------------------


def announce_on_commit(*, request_id: int) -> None:
    """Once the submitter's transaction commits (``transaction.on_commit``; nothing if it rolls back),
    enqueue :func:`announce_request` for the worker: the submitter's request does nothing else."""
    emails.after_commit(announce_request, request_id=request_id)


@task()
def announce_request(request_id: int) -> int:
    """The background task behind :func:`announce_on_commit`: :func:`announce`."""
    return announce(request_id=request_id)


def announce(*, request_id: int, now: dt.datetime | None = None) -> int:
    """Mail each approver who chose one mail per request (not its requester) about this new request, if
    it still waits for a decision. Returns how many mails were queued."""
    now = now or utcnow()
    request = (
        EnrollmentRequest.objects.select_related("owner", "renewal_of")
        .filter(pk=request_id, status=RequestStatus.SUBMITTED)
        .first()
    )
    if request is None:  # decided already (or gone): nobody needs to be told
        return 0
    sent = 0
    for approver in mailed_approvers():
        if approver.choice != ApproverMail.EACH or approver.account.pk == request.owner_id:
            continue
        context = _context(approver, request=_facts(approver, [request], now=now)[0])
        sent += _record_and_send(
            "approver_new_request",
            approver=approver,
            requests=[request],
            kind=ApproverNoticeKind.NEW,
            now=now,
            context=context,
        )
    return sent


# --- digests and reminders (manage.py notify_approvers) ---------------------------------------------


def send_digests(*, now: dt.datetime | None = None) -> int:
    """Mail each approver who chose the digest one list of the waiting requests (not their own) that they
    were not told about yet; each request is in one digest per approver. Returns how many were queued."""
    now = now or utcnow()
    waiting = _waiting()
    if not waiting:
        return 0
    sent = 0
    for approver in mailed_approvers():
        if approver.choice != ApproverMail.DIGEST:
            continue
        own = approver.account.pk
        told = _told(approver, ApproverNoticeKind.NEW, waiting)
        new = [r for r in waiting if r.owner_id != own and r.pk not in told]
        if not new:
            continue
        context = _context(approver, requests=_facts(approver, new, now=now))
        sent += _record_and_send(
            "approver_digest", approver=approver, requests=new, kind=ApproverNoticeKind.NEW, now=now,
            context=context,
        )  # fmt: skip
    return sent


def overdue_since(now: dt.datetime) -> dt.datetime:
    """Requests submitted at or before this moment have waited past the service level."""
    return now - dt.timedelta(hours=int(settings.ENROLL_APPROVAL_SERVICE_HOURS))


def send_reminders(*, now: dt.datetime | None = None) -> int:
    """Mail each approver who gets mail (each or digest) one list of the requests (not their own) that have
    waited past the service level and that they were not reminded of yet; each request is in one reminder
    per approver. Returns how many were queued."""
    now = now or utcnow()
    overdue = [r for r in _waiting() if r.created_at <= overdue_since(now)]
    if not overdue:
        return 0
    sent = 0
    for approver in mailed_approvers():
        own = approver.account.pk
        reminded = _told(approver, ApproverNoticeKind.OVERDUE, overdue)
        due = [r for r in overdue if r.owner_id != own and r.pk not in reminded]
        if not due:
            continue
        context = _context(approver, requests=_facts(approver, due, now=now))
        sent += _record_and_send(
            "approver_overdue", approver=approver, requests=due, kind=ApproverNoticeKind.OVERDUE, now=now,
            context=context,
        )  # fmt: skip
    return sent
