"""Template helpers of the Enroll admin: the approvers' queue in every admin page's header and the
Enrollment app first on the admin index (templates/admin/base_site.html and index.html)."""

from __future__ import annotations

from typing import Any

from django import template
from django.http import HttpRequest

from enroll.models import EnrollmentRequest, RequestStatus

register = template.Library()

#: Looking at the queue needs one of these permissions.
QUEUE_PERMISSIONS = ("enroll.view_enrollmentrequest", "enroll.change_enrollmentrequest")


@register.simple_tag(takes_context=True)
def enroll_pending_count(context: template.Context) -> int | None:
    """How many requests wait for a decision (one COUNT query), or None for users who may not see them."""
    request: HttpRequest | None = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return None
    if not any(user.has_perm(permission) for permission in QUEUE_PERMISSIONS):
        return None
    return EnrollmentRequest.objects.filter(status=RequestStatus.SUBMITTED).count()


@register.filter
def enroll_first(app_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The admin index's apps with the Enrollment app first (the approvers' work), the rest as they were."""
    return sorted(app_list, key=lambda app: app.get("app_label") != "enroll")
