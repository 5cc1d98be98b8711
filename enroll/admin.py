"""Django admin for enrollment requests: look, approve, reject.

The admin never edits a request: status, certificate and decision change only through
:mod:`enroll.flows` (``approve`` and ``reject``), called by the actions "Approve selected requests" and
"Reject selected requests…" (a reason form in between) and by the buttons on a request's page.
Deciding needs the model's change permission (``enroll.change_enrollmentrequest``); looking needs the view
or change permission. Nobody approves their own request, superusers included (the flow refuses it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from accounts.models import APPROVE_PERMISSION, Profile, can_approve
from ca.admin_views import acting_user, badge, hex_search, log_admin_decision
from ca.clock import utcnow
from ca.models import BlockedKey, Certificate
from ca.pki.pem import pem_armor
from ca.types import Account
from enroll import flows
from enroll.device_info import instructions
from enroll.flows.devices import MAX_HOURS, MAX_USES
from enroll.models import CodeState, EnrollmentCode, EnrollmentRequest, RequestStatus

if TYPE_CHECKING:
    from django.contrib.admin.filters import _ListFilterChoices

    _RequestAdmin = admin.ModelAdmin[EnrollmentRequest]
else:
    _RequestAdmin = admin.ModelAdmin

admin.site.site_header = "Enroll administration"
admin.site.site_title = "Enroll"
admin.site.index_title = "Administration"

#: Approving and rejecting need this permission.
DECIDE_PERMISSION = APPROVE_PERMISSION

#: Up to this many requests, a bulk approval reports each one; beyond, it sums up (and lists that many
#: of the requests that got no certificate).
MESSAGES_PER_REQUEST_UP_TO = 20

#: A request's page lists this many of the owner's other requests and certificates.
OWNER_HISTORY_ROWS = 10

IGNORED_SUBJECT_NOTE = "requested, ignored: the certificate subject comes from the account"

STATUS_COLORS = {
    RequestStatus.SUBMITTED: "blue",
    RequestStatus.APPROVED: "blue",
    RequestStatus.REJECTED: "grey",
    RequestStatus.ISSUED: "green",
    RequestStatus.FAILED: "red",
}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


#: The queue: submitted requests, the list's default (oldest first).
QUEUE_QUERY = "status__exact=submitted"

#: What an approver sees of a request's key on the list: text and badge colour.
KEY_NEW = ("new key", "")
KEY_OWN = ("own earlier certificate", "blue")
KEY_OTHER = ("another account's certificate", "red")
KEY_BLOCKED = ("blocked key", "red")


def service_hours() -> float:
    """The service level: a submitted request should be decided within this many hours."""
    return float(settings.ENROLL_APPROVAL_SERVICE_HOURS)


def waiting_colour(waited: dt.timedelta, *, hours: float) -> tuple[str, str]:
    """Badge colour and words for a request that has waited ``waited``: green under half the service
    level, amber under it, red past it."""
    level = dt.timedelta(hours=hours)
    if waited < level / 2:
        return "green", "on time"
    if waited < level:
        return "amber", "due soon"
    return "red", "overdue"


@dataclass(frozen=True, slots=True)
class RowContext:
    """What the list shows beside a request, computed for the whole page at once (:func:`row_contexts`)."""

    verified_email: str | None
    key_seen: tuple[str, str]


def row_contexts(requests: Sequence[EnrollmentRequest]) -> dict[int, RowContext]:
    """The verified address of each owner and whether each key was seen before (own earlier certificate,
    another account's certificate, blocked), for a page of requests in three queries."""
    keys = {r.spki_sha256 for r in requests}
    owner_ids = {r.owner_id for r in requests}
    blocked = set(BlockedKey.objects.filter(spki_sha256__in=keys).values_list("spki_sha256", flat=True))
    holders: dict[str, list[tuple[int, int | None]]] = {}
    for pk, spki, owner_id in Certificate.objects.of_keys(keys).values_list("pk", "spki_sha256", "owner_id"):
        holders.setdefault(spki, []).append((pk, owner_id))
    profiles = {p.user_id: p for p in Profile.objects.filter(user_id__in=owner_ids)}
    contexts = {}
    for item in requests:
        email: str = getattr(item.owner, "email", "")
        profile = profiles.get(item.owner_id)
        verified = profile is not None and profile.verifies(email)
        earlier = [owner for pk, owner in holders.get(item.spki_sha256, []) if pk != item.certificate_id]
        if item.spki_sha256 in blocked:
            seen = KEY_BLOCKED
        elif any(owner != item.owner_id for owner in earlier):
            seen = KEY_OTHER
        elif earlier:
            seen = KEY_OWN
        else:
            seen = KEY_NEW
        contexts[item.pk] = RowContext(verified_email=email if verified else None, key_seen=seen)
    return contexts


class StatusFilter(admin.SimpleListFilter):
    """Status, opening on Submitted: a list looked at (GET) without a status or search shows the queue;
    "All" is a choice of its own. An action posted without a status acts on the selected rows whatever
    their status (select-across acts on the queue that was shown)."""

    title = "status"
    parameter_name = "status__exact"
    field_path = "status"
    ALL = "all"

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.default = RequestStatus.SUBMITTED.value if shows_queue_by_default(request) else self.ALL

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.ALL, "All"), *((value, str(label)) for value, label in RequestStatus.choices)]

    def value(self) -> str:
        return str(super().value() or self.default)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(status=value) if value in RequestStatus.values else queryset

    def choices(self, changelist: ChangeList) -> Iterator[_ListFilterChoices]:
        current = self.value()
        for lookup, title in self.lookup_choices:
            yield {
                "selected": current == str(lookup),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


def shows_queue_by_default(request: HttpRequest) -> bool:
    """A list asked for without a status or a search shows the submitted requests (the queue); a search
    spans every status."""
    if StatusFilter.parameter_name in request.GET or "q" in request.GET:
        return False
    return request.method in ("GET", "HEAD") or request.POST.get("select_across") == "1"


def shows_queue(request: HttpRequest) -> bool:
    status = request.GET.get(StatusFilter.parameter_name)
    return status == RequestStatus.SUBMITTED or (status is None and shows_queue_by_default(request))


def queue_for(request: HttpRequest, *, own: bool = False) -> QuerySet[EnrollmentRequest]:
    """The submitted requests, oldest first, that the approver may decide (or, ``own``, their own)."""
    waiting = EnrollmentRequest.objects.filter(status=RequestStatus.SUBMITTED)
    mine = Q(owner_id=request.user.pk)
    return (waiting.filter(mine) if own else waiting.exclude(mine)).order_by("created_at", "pk")


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The requests before and after one in the approver's queue (keys ``k`` and ``j``), and how many wait."""

    previous: int | None
    following: int | None
    waiting: int


def neighbours(request: HttpRequest, obj: EnrollmentRequest) -> Neighbours:
    queue = queue_for(request)
    later = Q(created_at__gt=obj.created_at) | Q(created_at=obj.created_at, pk__gt=obj.pk)
    earlier = Q(created_at__lt=obj.created_at) | Q(created_at=obj.created_at, pk__lt=obj.pk)
    return Neighbours(
        previous=queue.filter(earlier).order_by("-created_at", "-pk").values_list("pk", flat=True).first(),
        following=queue.filter(later).values_list("pk", flat=True).first(),
        waiting=queue.count(),
    )


class QueueChangeList(ChangeList):
    """The request list, with each page's context columns computed in a bounded number of queries."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        page = list(self.result_list)
        contexts = row_contexts(page)
        for item in page:
            item.queue_context = contexts[item.pk]
        self.result_list = page


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "class": "enroll-reason"}),
        label="Reason",
        help_text="The requester reads it: say what is wrong and what to do instead.",
        error_messages={"required": "Give a reason for the rejection; the requester reads it."},
    )


def _creator(code: EnrollmentCode) -> str:
    """Who made a code: an account, or the operator on the command line."""
    return code.created_by.get_username() if code.created_by is not None else "the operator (command line)"


@admin.register(EnrollmentRequest)
class EnrollmentRequestAdmin(_RequestAdmin):
    list_display = [
        "id",
        "owner",
        "device",
        "kind_column",
        "status_badge",
        "waiting",
        "account_age",
        "verified_address",
        "key_seen",
        "renewal_link",
        "key_description",
        "created_at",
        "decided_by",
    ]
    list_display_links = ["id", "owner"]
    list_filter = [StatusFilter, "kind", "created_at"]
    list_select_related = ["owner", "decided_by", "renewal_of", "enrollment_code__created_by"]
    search_fields = ["owner__username", "owner__email", "device_name", "request_sha256", "spki_sha256"]
    search_help_text = (
        "Username, e-mail, device name, request SHA-256 or SPKI fingerprint (hex, colons allowed), "
        "certificate serial."
    )
    date_hierarchy = "created_at"
    actions = ["approve_selected", "reject_selected"]
    change_form_template = "admin/enroll/enrollmentrequest/change_form.html"

    # --- nothing here is edited: the flow owns every field ---

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: EnrollmentRequest | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: EnrollmentRequest | None = None) -> bool:
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.is_authenticated and can_approve(request.user)

    def get_queryset(self, request: HttpRequest) -> QuerySet[EnrollmentRequest]:
        return super().get_queryset(request).defer("request_der")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QueueChangeList

    def get_ordering(self, request: HttpRequest) -> list[str]:
        """The queue oldest first; any other list newest first."""
        return ["created_at", "pk"] if shows_queue(request) else ["-created_at", "-pk"]

    def get_fieldsets(self, request: HttpRequest, obj: EnrollmentRequest | None = None) -> Any:
        return [
            (
                "Request",
                {
                    "fields": [
                        "owner_display",
                        "device",
                        "kind_column",
                        "device_origin",
                        "status_badge",
                        "created_at",
                        "renewal_link",
                    ]
                },
            ),
            (
                "Parsed details",
                {
                    "fields": [
                        "key_type",
                        "spki_fingerprint",
                        "request_fingerprint",
                        "requested_subject_display",
                        "issued_subject",
                        "request_pem",
                    ]
                },
            ),
            ("Decision", {"fields": ["decided_by", "decided_at", "reason", "certificate_link"]}),
        ]

    # --- columns and fields ---

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: EnrollmentRequest) -> str:
        return badge(obj.get_status_display(), STATUS_COLORS.get(RequestStatus(obj.status), "grey"))

    @admin.display(description="owner")
    def owner_display(self, obj: EnrollmentRequest) -> str:
        email = getattr(obj.owner, "email", "")
        return f"{obj.owner.get_username()} <{email}>" if email else obj.owner.get_username()

    @admin.display(description="key type and size")
    def key_type(self, obj: EnrollmentRequest) -> str:
        return obj.key_description

    @admin.display(description="SPKI fingerprint (SHA-256)")
    def spki_fingerprint(self, obj: EnrollmentRequest) -> str:
        return format_html("<code>{}</code>", obj.spki_sha256)

    @admin.display(description="request SHA-256")
    def request_fingerprint(self, obj: EnrollmentRequest) -> str:
        return format_html("<code>{}</code>", obj.request_sha256)

    @admin.display(description="requested subject")
    def requested_subject_display(self, obj: EnrollmentRequest) -> str:
        return format_html(
            '<code>{}</code><br><small class="enroll-note">({})</small>',
            obj.requested_subject or "(empty)",
            IGNORED_SUBJECT_NOTE,
        )

    @admin.display(description="certificate subject")
    def issued_subject(self, obj: EnrollmentRequest) -> str:
        if obj.certificate is not None:
            return obj.certificate.subject
        subject = flows.subject_for(obj.owner)
        parts = [f"CN={subject.common_name}"]
        if subject.organization:
            parts.append(f"O={subject.organization}")
        email = f"e-mail {subject.email}" if subject.email else "no e-mail (the address is not verified)"
        return f"{', '.join(parts)}; {email}. Taken from the account when the certificate is signed."

    @admin.display(description="request (PEM)")
    def request_pem(self, obj: EnrollmentRequest) -> str:
        label = "CERTIFICATE REQUEST" if obj.request_format == "csr" else "SPKAC"
        text = pem_armor(der=bytes(obj.request_der), label=label).decode("ascii")
        return format_html('<pre class="enroll-pem">{}</pre>', text)

    @admin.display(description="certificate")
    def certificate_link(self, obj: EnrollmentRequest) -> str:
        if obj.certificate is None:
            return "-"
        url = reverse("admin:ca_certificate_change", args=[obj.certificate.pk])
        return format_html('<a href="{}"><code>{}</code></a>', url, obj.certificate.serial_colons)

    def _row(self, obj: EnrollmentRequest) -> RowContext:
        context: RowContext | None = getattr(obj, "queue_context", None)
        return context if context is not None else row_contexts([obj])[obj.pk]

    @admin.display(description="waiting")
    def waiting(self, obj: EnrollmentRequest) -> str:
        if obj.status != RequestStatus.SUBMITTED:
            return "-"
        waited = utcnow() - obj.created_at
        colour, words = waiting_colour(waited, hours=service_hours())
        return badge(f"{timesince(obj.created_at, utcnow(), depth=1)}, {words}", colour)

    @admin.display(description="device", ordering="device_name")
    def device(self, obj: EnrollmentRequest) -> str:
        return obj.device_name or "-"

    @admin.display(description="kind", ordering="kind")
    def kind_column(self, obj: EnrollmentRequest) -> str:
        """A device's request (EST, SCEP) is marked, with who made its code (or that it renews)."""
        if not obj.is_device_request:
            return str(obj.get_kind_display())
        label = badge(str(obj.kind).upper(), "blue")
        code = obj.enrollment_code
        if code is None:
            return format_html("{} device re-enrollment", label)
        return format_html("{} device, code by {}", label, _creator(code))

    @admin.display(description="device enrollment")
    def device_origin(self, obj: EnrollmentRequest) -> str:
        if not obj.is_device_request:
            return "-"
        code = obj.enrollment_code
        parts = [str(obj.get_kind_display())]
        if code is not None:
            approval = "pre-approved" if code.pre_approved else "through the approval queue"
            named = f" for device {code.device_name!r}" if code.device_name else ""
            parts.append(f"enrollment code #{code.pk}{named}, made by {_creator(code)}, {approval}")
        elif obj.renewal_of_id is not None:
            parts.append("re-enrollment with the device's current certificate")
        if obj.transaction_id:
            parts.append(f"transaction ID {obj.transaction_id}")
        return "; ".join(parts)

    @admin.display(description="account age", ordering="owner__date_joined")
    def account_age(self, obj: EnrollmentRequest) -> str:
        joined: dt.datetime | None = getattr(obj.owner, "date_joined", None)
        return timesince(joined, utcnow(), depth=1) if joined is not None else "-"

    @admin.display(description="verified address")
    def verified_address(self, obj: EnrollmentRequest) -> str:
        email = self._row(obj).verified_email
        if email is None:
            return format_html('<span class="enroll-no">{}</span>', "\u2717 not verified")
        return format_html('<span class="enroll-yes">\u2713 {}</span>', email)

    @admin.display(description="key seen before")
    def key_seen(self, obj: EnrollmentRequest) -> str:
        text, colour = self._row(obj).key_seen
        return badge(text, colour) if colour else text

    @admin.display(description="renewal of")
    def renewal_link(self, obj: EnrollmentRequest) -> str:
        renewed = obj.renewal_of
        if renewed is None:
            return "-"
        url = reverse("admin:ca_certificate_change", args=[renewed.pk])
        return format_html('<a href="{}"><code>{}</code></a>', url, renewed.serial_colons)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[EnrollmentRequest], search_term: str
    ) -> tuple[QuerySet[EnrollmentRequest], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        extra = hex_search(search_term, exact=("request_sha256", "spki_sha256"), serial="certificate__serial")
        if extra is not None:
            results = results | queryset.filter(extra)
        return results, may_have_duplicates

    # --- deciding ---

    def _approve(self, request: HttpRequest, request_id: int, by: Account) -> None:
        try:
            decided = flows.approve(request_id=request_id, by=by)
        except flows.FlowError as exc:
            result = flows.ApprovalResult(request_id, flows.ApprovalOutcome.REFUSED, reason=str(exc))
        else:
            issued = decided.status == RequestStatus.ISSUED and decided.certificate is not None
            result = flows.ApprovalResult(
                request_id,
                flows.ApprovalOutcome.ISSUED if issued else flows.ApprovalOutcome.FAILED,
                request=decided,
                certificate=decided.certificate,
                reason=decided.reason,
            )
        self._log_approval(request, result)
        self._report(request, result)

    def _log_approval(self, request: HttpRequest, result: flows.ApprovalResult) -> None:
        """The approval in the admin's "Recent actions" (a refused one changed nothing: not logged)."""
        if result.request is None or result.outcome == flows.ApprovalOutcome.REFUSED:
            return
        if result.outcome == flows.ApprovalOutcome.ISSUED and result.certificate is not None:
            log_admin_decision(
                request, [result.request], f"Approved: certificate {result.certificate.serial}."
            )
            log_admin_decision(request, [result.certificate], f"Issued for request #{result.request_id}.")
        else:
            log_admin_decision(request, [result.request], f"Approved, but no certificate: {result.reason}")

    def _reject(self, request: HttpRequest, request_id: int, reason: str, by: Account) -> bool:
        try:
            decided = flows.reject(request_id=request_id, reason=reason, by=by)
        except flows.FlowError as exc:
            messages.error(request, f"Request #{request_id} was not rejected: {exc}")
            return False
        log_admin_decision(request, [decided], f"Rejected: {reason}")
        messages.success(request, f"Request #{request_id} of {decided.owner.get_username()} rejected.")
        return True

    @admin.action(description="Approve selected requests", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[EnrollmentRequest]) -> None:
        """Approve and issue all selected requests at once (:func:`enroll.flows.approve_many`)."""
        request_ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        results = flows.approve_many(request_ids=request_ids, actor=acting_user(request))
        for result in results:
            self._log_approval(request, result)
        if len(results) <= MESSAGES_PER_REQUEST_UP_TO:
            for result in results:
                self._report(request, result)
            return
        issued = [r for r in results if r.outcome == flows.ApprovalOutcome.ISSUED]
        if issued:
            done = len(issued)
            summary = f"{_count(done, 'request')} approved: {_count(done, 'certificate')} issued."
            messages.success(request, summary)
        problems = [r for r in results if r.outcome != flows.ApprovalOutcome.ISSUED]
        if problems:
            listed = "; ".join(f"#{r.request_id}: {r.reason}" for r in problems[:MESSAGES_PER_REQUEST_UP_TO])
            more = len(problems) - MESSAGES_PER_REQUEST_UP_TO
            messages.error(
                request,
                f"{_count(len(problems), 'request')} got no certificate (filter by status to see them): "
                f"{listed}" + (f"; and {more} more." if more > 0 else ""),
            )

    def _report(self, request: HttpRequest, result: flows.ApprovalResult) -> None:
        """The message for one request's approval (the Approve button or a bulk approval)."""
        owner = result.request.owner.get_username() if result.request is not None else ""
        if result.outcome == flows.ApprovalOutcome.ISSUED and result.certificate is not None:
            messages.success(
                request,
                f"Request #{result.request_id} of {owner} approved: "
                f"certificate {result.certificate.serial} issued.",
            )
        elif result.outcome == flows.ApprovalOutcome.FAILED:
            messages.error(
                request,
                f"Request #{result.request_id} of {owner} was approved, but no certificate: {result.reason}",
            )
        else:
            messages.error(request, f"Request #{result.request_id} was not approved: {result.reason}")

    @admin.action(description="Reject selected requests…", permissions=["decide"])
    def reject_selected(
        self, request: HttpRequest, queryset: QuerySet[EnrollmentRequest]
    ) -> TemplateResponse | None:
        if request.POST.get("post") == "yes":
            form = RejectForm(request.POST)
            if form.is_valid():
                by = acting_user(request)
                for request_id in queryset.order_by("pk").values_list("pk", flat=True):
                    self._reject(request, request_id, form.cleaned_data["reason"], by)
                return None
        else:
            form = RejectForm()
        return self._reject_page(request, queryset.select_related("owner").order_by("pk"), form, action=True)

    def _reject_page(
        self,
        request: HttpRequest,
        queryset: QuerySet[EnrollmentRequest],
        form: RejectForm,
        *,
        action: bool,
        and_next: bool = False,
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/enroll/enrollmentrequest/reject.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reject requests",
                "opts": self.model._meta,
                "requests": list(queryset),
                "form": form,
                "action": action,
                "and_next": and_next,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def _decidable(self, request: HttpRequest, object_id: int) -> EnrollmentRequest:
        if not self.has_decide_permission(request):
            raise PermissionDenied
        return get_object_or_404(EnrollmentRequest.objects.select_related("owner"), pk=object_id)

    def _after_decision(self, request: HttpRequest, obj: EnrollmentRequest) -> HttpResponseRedirect:
        """Back to the request's page; with "… and next" (``_next`` posted), on to the oldest submitted
        request that is not the approver's own, or to the list when the queue is empty."""
        if not request.POST.get("_next"):
            return HttpResponseRedirect(reverse("admin:enroll_enrollmentrequest_change", args=[obj.pk]))
        following = queue_for(request).exclude(pk=obj.pk).values_list("pk", flat=True).first()
        if following is not None:
            return HttpResponseRedirect(reverse("admin:enroll_enrollmentrequest_change", args=[following]))
        own = queue_for(request, own=True).count()
        messages.info(
            request,
            "The queue is empty: no other request waits for your decision."
            + (f" {_count(own, 'request')} of yours wait for another administrator." if own else ""),
        )
        return HttpResponseRedirect(f"{reverse('admin:enroll_enrollmentrequest_changelist')}?{QUEUE_QUERY}")

    def approve_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        obj = self._decidable(request, object_id)
        self._approve(request, obj.pk, acting_user(request))
        return self._after_decision(request, obj)

    def reject_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        obj = self._decidable(request, object_id)
        if request.method == "POST":
            form = RejectForm(request.POST)
            if form.is_valid():
                self._reject(request, obj.pk, form.cleaned_data["reason"], acting_user(request))
                return self._after_decision(request, obj)
        else:
            form = RejectForm()
        return self._reject_page(
            request,
            EnrollmentRequest.objects.filter(pk=obj.pk).select_related("owner"),
            form,
            action=False,
            and_next=bool(request.POST.get("_next")),
        )

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:object_id>/approve/",
                wrap(require_POST(self.approve_view)),
                name="enroll_enrollmentrequest_approve",
            ),
            path("<int:object_id>/reject/", wrap(self.reject_view), name="enroll_enrollmentrequest_reject"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        context: dict[str, Any] = {**(extra_context or {})}
        if obj is not None:
            context["decision"] = {
                "open": obj.status == RequestStatus.SUBMITTED,
                "allowed": self.has_decide_permission(request),
                "own": obj.owner_id == request.user.pk,
                "reject_form": RejectForm(),
            }
            context["queue"] = neighbours(request, obj)
            context["owner_requests"] = list(
                EnrollmentRequest.objects.filter(owner_id=obj.owner_id)
                .exclude(pk=obj.pk)
                .select_related("certificate")
                .defer("request_der", "certificate__der")
                .order_by("-created_at", "-pk")[:OWNER_HISTORY_ROWS]
            )
            now = utcnow()
            context["owner_certificates"] = [
                (certificate, certificate.status_at(now).label)
                for certificate in Certificate.objects.filter(owner_id=obj.owner_id)
                .select_related("revocation")
                .defer("der")
                .order_by("-created_at", "-pk")[:OWNER_HISTORY_ROWS]
            ]
        return super().change_view(request, object_id, form_url, context)


# --- enrollment codes (managed devices: docs/DEVICES.md) ---------------------------------------------

CODE_STATE_COLORS = {
    CodeState.ACTIVE: "green",
    CodeState.USED_UP: "grey",
    CodeState.EXPIRED: "grey",
    CodeState.REVOKED: "red",
}

if TYPE_CHECKING:
    _CodeAdmin = admin.ModelAdmin[EnrollmentCode]
else:
    _CodeAdmin = admin.ModelAdmin


class EnrollmentCodeForm(forms.ModelForm):  # type: ignore[type-arg]
    """An approver makes a code for an account: its device, uses, hours, and whether it is pre-approved."""

    uses = forms.IntegerField(
        min_value=1,
        max_value=MAX_USES,
        initial=1,
        help_text="How many devices (requests) may use it. SCEP takes single-use codes only.",
    )
    hours = forms.FloatField(
        min_value=0.1, max_value=MAX_HOURS, initial=24, help_text="How long it is valid, in hours."
    )
    pre_approve = forms.BooleanField(
        required=False,
        initial=True,
        label="Pre-approved",
        help_text=(
            "Issue without the approval queue. Not for your own account: nobody approves their own requests."
        ),
    )

    class Meta:
        model = EnrollmentCode
        fields = ["owner", "device_name"]

    def __init__(self, *args: Any, actor: Account | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        self.code = ""

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        owner = cleaned.get("owner")
        if (
            cleaned.get("pre_approve")
            and owner is not None
            and self.actor is not None
            and owner.pk == self.actor.pk
        ):
            self.add_error(
                "pre_approve",
                "Nobody pre-approves a code for their own account: leave it unticked, and another approver "
                "will decide the device's request.",
            )
        return cleaned


@admin.register(EnrollmentCode)
class EnrollmentCodeAdmin(_CodeAdmin):
    """Enrollment codes: list, make one for an account (shown once), revoke. Codes are never edited."""

    list_display = [
        "id",
        "owner",
        "device_name",
        "state_badge",
        "uses_column",
        "expires_at",
        "created_by_column",
        "pre_approved",
        "created_at",
    ]
    list_select_related = ["owner", "created_by"]
    list_filter = ["pre_approved", "created_at"]
    search_fields = ["owner__username", "owner__email", "device_name"]
    search_help_text = "Username, e-mail or device name."
    ordering = ["-created_at", "-pk"]
    actions = ["revoke_selected"]
    form = EnrollmentCodeForm
    readonly_fields = [
        "owner",
        "device_name",
        "state_badge",
        "uses_column",
        "pre_approved",
        "created_by_column",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "requests_made",
    ]
    raw_id_fields = ["owner"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_authenticated and can_approve(request.user)

    def has_change_permission(self, request: HttpRequest, obj: EnrollmentCode | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: EnrollmentCode | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: EnrollmentCode | None = None) -> bool:
        return request.user.is_authenticated and (
            can_approve(request.user) or super().has_view_permission(request, obj)
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def get_fields(self, request: HttpRequest, obj: EnrollmentCode | None = None) -> Any:
        if obj is None:
            return ["owner", "device_name", "uses", "hours", "pre_approve"]
        return self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: EnrollmentCode | None = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def get_form(
        self, request: HttpRequest, obj: EnrollmentCode | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is not None:
            return super().get_form(request, obj, change, **kwargs)
        kwargs["fields"] = ["owner", "device_name"]  # the form's own fields (uses, hours, ...) come with it
        form_class = super().get_form(request, obj, change, **kwargs)
        actor = acting_user(request)

        class WithActor(form_class):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **inner: Any) -> None:
                super().__init__(*args, actor=actor, **inner)

        return WithActor

    @admin.display(description="state")
    def state_badge(self, obj: EnrollmentCode) -> str:
        state = obj.state(utcnow())
        return badge(str(state.label), CODE_STATE_COLORS[state])

    @admin.display(description="uses", ordering="uses")
    def uses_column(self, obj: EnrollmentCode) -> str:
        return f"{obj.uses} of {obj.max_uses}"

    @admin.display(description="made by")
    def created_by_column(self, obj: EnrollmentCode) -> str:
        return _creator(obj)

    @admin.display(description="requests")
    def requests_made(self, obj: EnrollmentCode) -> str:
        links = [
            format_html(
                '<a href="{}">#{}</a> ({})',
                reverse("admin:enroll_enrollmentrequest_change", args=[r.pk]),
                r.pk,
                r.get_status_display(),
            )
            for r in obj.requests.order_by("created_at")
        ]
        return format_html_join(", ", "{}", ((link,) for link in links)) if links else "-"

    def save_model(self, request: HttpRequest, obj: EnrollmentCode, form: Any, change: bool) -> None:
        """The flow makes the code (audited); the form keeps it for the page that shows it once."""
        row, code = flows.create_enrollment_code(
            owner=form.cleaned_data["owner"],
            created_by=acting_user(request),
            device_name=form.cleaned_data.get("device_name") or "",
            pre_approve=bool(form.cleaned_data.get("pre_approve")),
            uses=form.cleaned_data["uses"],
            hours=form.cleaned_data["hours"],
        )
        obj.pk = row.pk
        request._enrollment_code = code  # type: ignore[attr-defined]  # for response_add, this request only

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return None  # nothing related: the flow stored everything

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the flow's audit entry records it (with no code in it)

    def response_add(
        self, request: HttpRequest, obj: EnrollmentCode, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The code, shown this once, with the addresses and commands that use it."""
        row = EnrollmentCode.objects.select_related("owner").get(pk=obj.pk)
        code = getattr(request, "_enrollment_code", "")
        info = instructions(code=code, device_name=row.device_name, username=row.owner.get_username())
        return TemplateResponse(
            request,
            "admin/enroll/enrollmentcode/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "row": row,
                "code": code,
                "info": info,
                "title": "Enrollment code created",
            },
        )

    @admin.action(description="Revoke selected enrollment codes")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[EnrollmentCode]) -> None:
        if not can_approve(acting_user(request)):
            raise PermissionDenied
        revoked = 0
        for row in queryset:
            if row.revoked_at is None:
                flows.revoke_enrollment_code(code_id=row.pk, actor=acting_user(request))
                revoked += 1
        messages.success(
            request,
            f"{_count(revoked, 'enrollment code')} revoked; waiting requests made with them were rejected.",
        )
