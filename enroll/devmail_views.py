"""The development mail page, ``/dev/mail/``: the messages the portal sent (:mod:`enroll.devmail`), newest
first. DEBUG only: 404 otherwise, whoever asks."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from enroll import devmail


@require_safe
def dev_mail(request: HttpRequest) -> HttpResponse:
    if not settings.DEBUG:
        raise Http404("There is no such page.")
    mails, total = devmail.kept_mails()
    return render(
        request,
        "enroll/dev_mail.html",
        {"mails": mails, "total": total, "folder": devmail.mail_dir(), "backend": settings.EMAIL_BACKEND},
    )
