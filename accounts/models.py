from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from ca.types import Account

#: Staff with this permission decide enrollment requests (enroll.admin.DECIDE_PERMISSION; named here too
#: because accounts sits below enroll). Active superusers have it.
APPROVE_PERMISSION = "enroll.change_enrollmentrequest"


def can_approve(user: Account) -> bool:
    """Whether ``user`` decides enrollment requests: active staff with :data:`APPROVE_PERMISSION`."""
    return bool(user.is_active and getattr(user, "is_staff", False) and user.has_perm(APPROVE_PERMISSION))


class ApproverMail(models.TextChoices):
    """How an approver hears of new requests; ``SITE`` follows ``settings.ENROLL_APPROVER_MAIL``."""

    SITE = "", _("As the site sets it")
    EACH = "each", _("One e-mail per new request")
    DIGEST = "digest", _("One e-mail an hour listing the new requests")
    NONE = "none", _("No e-mail about requests")


def known_language(code: str) -> str:
    """``code`` if it is one of ``settings.LANGUAGES`` (the portal's languages), else ""."""
    return code if code in dict(settings.LANGUAGES) else ""


class Profile(models.Model):
    """Per-account facts beyond Django's user: whether the e-mail address was verified, the person's
    language, and (for approvers) how they hear of new requests."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    email_verified_at = models.DateTimeField(null=True, blank=True)
    verified_email = models.EmailField(blank=True, help_text="The address that was verified.")
    approver_mail = models.CharField(
        max_length=8,
        choices=ApproverMail.choices,
        blank=True,
        default=ApproverMail.SITE,
        help_text="For approvers: how they hear of new requests (empty: as ENROLL_APPROVER_MAIL says).",
    )
    language = models.CharField(
        max_length=16,
        blank=True,
        default="",
        help_text="The person's language (a code of settings.LANGUAGES): their mails, and their pages after "
        "logging in. Set at sign-up from the page's language and by the language switcher; empty: the "
        "site's (LANGUAGE_CODE).",
    )

    def __str__(self) -> str:
        return f"profile of {self.user}"

    def mail_language(self) -> str:
        """The language the person's mails are written in: theirs, else the site's."""
        return known_language(self.language) or str(settings.LANGUAGE_CODE)

    def verifies(self, email: str) -> bool:
        """Whether ``email`` (the account's current address) is the one that was verified: an address
        changed since its verification is not verified."""
        return (
            self.email_verified_at is not None
            and bool(email)
            and self.verified_email.lower() == email.lower()
        )
