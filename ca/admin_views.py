"""The revocation screen of the Django admin, and the CRL health it shows.

Wired into the admin's URL namespace by :class:`ca.admin.CertificateAdmin` (``admin:ca-revocation``,
``admin:ca-crl-republish``). Steps: choose certificates (ticked in the certificate list, or serials typed
in any format), a reason and an optional invalidity date -> a confirmation page listing what will be
revoked -> POST revokes each through :func:`ca.services.revoke_certificate` (the CRL is republished as
each revocation commits) and the results come back as admin messages.

Everything on the screen (seeing it, revoking, republishing) needs a staff account with the permission
``ca.add_revocation``.

Each CA's CRL is shown with its health (:func:`ca.services.propagation.crl_healths`): its color (the rule
is :class:`ca.services.propagation.CrlColor`), advice in plain words, and each registered front server
with what it reported installing (signed reports only), its color and, when its last run failed, the error.
``static/ca/propagation.js`` refreshes the colors from ``/pki/health.json`` while anything is not green.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil
from django.views.decorators.http import require_POST

from ca.clock import utcnow
from ca.errors import AlreadyRevoked, CAError, CrlNotPublished
from ca.models import Certificate, CertificateAuthority, CrlPublication, RevocationReason
from ca.pki.serials import SerialFormatError, format_serial, parse_serial
from ca.services.crl import crl_lifetime, publish_crl
from ca.services.propagation import MARGIN, RED_FRACTION, CrlColor, CrlHealth, NodeState, crl_healths
from ca.services.revocation import key_siblings, revoke_certificate
from ca.types import Account

#: The permission every part of the revocation screen needs (besides a staff account).
REVOKE_PERMISSION = "ca.add_revocation"

#: Most serials one submission of the screen takes.
MAX_SERIALS = 500

_SERIAL_SEPARATORS = re.compile(r"[\r\n,;]+")


# --- helpers shared by the admin modules -----------------------------------------------------------

_HEX_SEPARATORS = re.compile(r"[\s:]")
_HEX = re.compile(r"[0-9a-f]+")


def compact_hex(text: str) -> str | None:
    """``text`` without colons, spaces and 0x, lower-case, if it is hexadecimal (a serial, a fingerprint)."""
    compact = _HEX_SEPARATORS.sub("", text.strip()).lower().removeprefix("0x")
    return compact if compact and _HEX.fullmatch(compact) else None


def hex_search(term: str, *, exact: tuple[str, ...] = (), serial: str | None = None) -> Q | None:
    """Matches for a search term that may be a serial (the field ``serial``) or a SHA-256 (``exact`` fields).

    Serials are accepted in any format (colons, spaces, any case, 0x) and matched in canonical form, or as
    a part of the canonical serial (4 digits or more); a 64-digit hex term matches the ``exact`` fields,
    so fingerprints can be pasted with colons or in upper case. None when the term is not hexadecimal.
    """
    compact = compact_hex(term)
    if compact is None:
        return None
    query = Q(pk__in=[])
    if serial is not None:
        with contextlib.suppress(SerialFormatError):
            query |= Q(**{serial: format_serial(serial=parse_serial(text=term))})
        if len(compact) >= 4:
            query |= Q(**{f"{serial}__contains": compact.upper()})
    if len(compact) == 64:
        for field in exact:
            query |= Q(**{field: compact})
    return query


_DECIMAL = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1


def decimal_id(text: str) -> int | None:
    """``text`` as an integer that fits a database big integer (a pk, a CRL number), else None.

    Only ASCII digits count: ``str.isdigit`` also accepts characters such as "²" that ``int`` refuses.
    """
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if value <= _BIGINT_MAX else None


def badge(text: str, color: str) -> str:
    """A coloured status label (styles in templates/admin/base_site.html)."""
    return format_html('<span class="enroll-badge enroll-badge-{}">{}</span>', color, text)


def acting_user(request: HttpRequest) -> Account:
    """The logged-in administrator (the admin site lets nobody else through)."""
    user = request.user
    if not user.is_authenticated:
        raise PermissionDenied
    return user


def log_admin_decision(request: HttpRequest, objects: Iterable[Model], message: str) -> None:
    """Write the decision as Django admin log entries (a change of each object), so the admin's "Recent
    actions" and each object's history show it. The audit log (ca.audit) is written by the service."""
    items = list(objects)
    if items:
        LogEntry.objects.log_actions(acting_user(request).pk, items, CHANGE, change_message=message[:2000])


def can_revoke(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.is_staff and request.user.has_perm(REVOKE_PERMISSION)


def _require_revoke_permission(request: HttpRequest) -> None:
    if not can_revoke(request):
        raise PermissionDenied(
            "Revoking certificates and republishing CRLs needs the permission ca.add_revocation."
        )


# --- CRL health ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrlPanel:
    """What the screen shows about one CA's current CRL: its health, and what to do about it."""

    health: CrlHealth
    advice: str


def _advice(health: CrlHealth, now: dt.datetime) -> str:
    crl = health.crl
    if crl is None:
        return "No CRL has been published for this CA: front servers have nothing to check. Republish now."
    if crl.next_update <= now:
        return (
            f"Expired {timesince(crl.next_update, now)} ago: front servers that check CRLs (nginx) refuse "
            "every client. Republish now, then check the front servers' CRL sync."
        )
    left = timeuntil(crl.next_update, now)
    if health.color is CrlColor.GREEN:
        return f"Fresh: {left} left until nextUpdate, more than half of its lifetime."
    if health.color is CrlColor.AMBER:
        return (
            f"Re-sign overdue: {left} left, less than half of its lifetime. It is normally re-signed at "
            "half-time by cron (manage.py publish_crl --if-stale) or on the next download; check that "
            "cron runs, or republish now."
        )
    return (
        f"About to expire: {left} left, less than a tenth of its lifetime. Front servers refuse every "
        "client once it expires. Republish now."
    )


def crl_panels(*, now: dt.datetime) -> list[CrlPanel]:
    """The newest CRL of every CA as stored (looking does not re-sign it), with its health."""
    return [
        CrlPanel(health=health, advice=_advice(health, now))
        for health in crl_healths(now=now, with_unstored=True)
    ]


# --- forms -----------------------------------------------------------------------------------------


class CertificateChoiceField(forms.ModelMultipleChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        certificate = cast(Certificate, obj)
        status = certificate.status_at(utcnow()).label
        return f"{certificate.serial_colons} · {certificate.subject} · {certificate.ca.slug} · {status}"


def _certificates() -> QuerySet[Certificate]:
    return Certificate.objects.issued().select_related("ca", "owner", "revocation").defer("der")


class RevocationForm(forms.Form):
    """Step one: which certificates, why, and since when the key is suspect."""

    certificates = CertificateChoiceField(
        queryset=Certificate.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Selected certificates",
    )
    serials = forms.CharField(
        required=False,
        max_length=50_000,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70, "spellcheck": "false"}),
        label="Serial numbers",
        help_text=(
            "One per line (or separated by commas), in hexadecimal with or without colons, any case: "
            "as nginx ($ssl_client_serial), Apache or openssl x509 -serial print them."
        ),
    )
    reason = forms.TypedChoiceField(
        choices=RevocationReason.choices,
        coerce=RevocationReason,
        initial=RevocationReason.UNSPECIFIED,
        label="Reason",
    )
    invalidity_date = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        label="Invalidity date (UTC)",
        help_text=(
            "Optional: since when the key is known or suspected to be compromised. Leave empty if unknown."
        ),
    )

    def __init__(self, *args: Any, offered: Iterable[int] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(CertificateChoiceField, self.fields["certificates"])
        field.queryset = _certificates().filter(pk__in=list(offered)).order_by("serial")

    def clean_invalidity_date(self) -> dt.datetime | None:
        value: dt.datetime | None = self.cleaned_data.get("invalidity_date")
        if value is not None and value > utcnow():
            raise ValidationError("The invalidity date cannot be in the future.")
        return value

    def clean_serials(self) -> list[Certificate]:
        text: str = self.cleaned_data.get("serials") or ""
        tokens = [token.strip() for token in _SERIAL_SEPARATORS.split(text) if token.strip()]
        if len(tokens) > MAX_SERIALS:
            raise ValidationError(f"Enter at most {MAX_SERIALS} serial numbers at a time.")
        errors: list[str] = []
        wanted: dict[str, str] = {}  # canonical serial -> as typed
        for token in tokens:
            try:
                wanted.setdefault(format_serial(serial=parse_serial(text=token)), token)
            except SerialFormatError as exc:
                errors.append(str(exc))
        found: dict[str, list[Certificate]] = {}
        for certificate in _certificates().filter(serial__in=list(wanted)):
            found.setdefault(certificate.serial, []).append(certificate)
        chosen: list[Certificate] = []
        for serial, typed in wanted.items():
            matches = found.get(serial, [])
            if not matches:
                errors.append(f"No certificate with serial {typed[:80]} was issued here.")
            elif len(matches) > 1:
                errors.append(
                    f"Several CAs issued serial {serial}; tick the certificate in the certificate list "
                    "and use the action 'Revoke selected certificates' instead."
                )
            else:
                chosen.append(matches[0])
        if errors:
            raise ValidationError(errors)
        return chosen

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        targets: dict[int, Certificate] = {}
        for certificate in [*cleaned.get("certificates", []), *cleaned.get("serials", [])]:
            targets.setdefault(certificate.pk, certificate)
        if not targets:
            raise ValidationError(
                "Choose at least one certificate: tick it above or enter its serial number."
            )
        to_revoke = [c for c in targets.values() if not hasattr(c, "revocation")]
        if not to_revoke:
            raise ValidationError("Every chosen certificate is revoked already; there is nothing to revoke.")
        cleaned["to_revoke"] = to_revoke
        cleaned["already_revoked"] = [c for c in targets.values() if hasattr(c, "revocation")]
        return cleaned


class RevocationConfirmForm(forms.Form):
    """Step two: the confirmed choice, carried in hidden fields."""

    certificates = forms.ModelMultipleChoiceField(
        queryset=Certificate.objects.issued().select_related("ca"), widget=forms.MultipleHiddenInput
    )
    reason = forms.TypedChoiceField(
        choices=RevocationReason.choices, coerce=RevocationReason, widget=forms.HiddenInput
    )
    invalidity_date = forms.DateTimeField(required=False, widget=forms.HiddenInput)


# --- views -----------------------------------------------------------------------------------------


def _ids(values: Iterable[str]) -> list[int]:
    """The integers among ``values`` (anything else is ignored)."""
    return [
        number for value in values for part in value.split(",") if (number := decimal_id(part)) is not None
    ]


def _duration(delta: dt.timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours % 24 == 0:
        return f"{hours // 24} day{'s' if hours != 24 else ''}"
    return f"{hours} hour{'s' if hours != 1 else ''}"


def _screen(
    request: HttpRequest, admin_site: AdminSite, *, template: str, title: str, **context: Any
) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {
            **admin_site.each_context(request),
            "title": title,
            "opts": Certificate._meta,
            "reasons": RevocationReason,
            **context,
        },
    )


def revocation_view(request: HttpRequest, admin_site: AdminSite) -> HttpResponse:
    """GET: the form (certificates preselected by ``?ids=``) and the CRLs; POST: confirm, then revoke."""
    _require_revoke_permission(request)
    now = utcnow()
    if request.method == "POST" and request.POST.get("step") == "revoke":
        return _revoke(request)
    if request.method == "POST":
        offered = _ids(request.POST.getlist("offered"))
        form = RevocationForm(request.POST, offered=offered)
        if form.is_valid():
            to_revoke: list[Certificate] = form.cleaned_data["to_revoke"]
            invalidity_date: dt.datetime | None = form.cleaned_data["invalidity_date"]
            reason = RevocationReason(form.cleaned_data["reason"])
            compromised = reason == RevocationReason.KEY_COMPROMISE
            on_same_key = _on_same_key(to_revoke, now=now) if compromised else []
            confirm = RevocationConfirmForm(
                initial={
                    "certificates": [c.pk for c in to_revoke],
                    "reason": form.cleaned_data["reason"],
                    "invalidity_date": invalidity_date.isoformat() if invalidity_date else "",
                }
            )
            return _screen(
                request,
                admin_site,
                template="admin/ca/certificate/revocation_confirm.html",
                title="Confirm the revocation",
                confirm=confirm,
                to_revoke=to_revoke,
                already_revoked=form.cleaned_data["already_revoked"],
                on_same_key=on_same_key,
                revoking=len(to_revoke) + len(on_same_key),
                reason=reason,
                invalidity_date=invalidity_date,
                now=now,
            )
    else:
        offered = _ids(request.GET.getlist("ids"))
        form = RevocationForm(offered=offered, initial={"certificates": offered})
    return _screen(
        request,
        admin_site,
        template="admin/ca/certificate/revocation.html",
        title="Revoke certificates",
        form=form,
        offered=offered,
        panels=crl_panels(now=now),
        now=now,
        red_percent=round(RED_FRACTION * 100),
        crl_lifetime=_duration(crl_lifetime()),
        node_margin=round(MARGIN),
        node_states={state.value: state.text for state in NodeState},
    )


def _on_same_key(certificates: list[Certificate], *, now: dt.datetime) -> list[Certificate]:
    """The other unexpired certificates on the keys of ``certificates``: revoked too for key compromise."""
    chosen = {certificate.pk for certificate in certificates}
    found: dict[int, Certificate] = {}
    for certificate in certificates:
        for sibling in key_siblings(certificate, now=now):
            if sibling.pk not in chosen:
                found.setdefault(sibling.pk, sibling)
    return list(found.values())


def _revoke(request: HttpRequest) -> HttpResponse:
    back = HttpResponseRedirect(reverse("admin:ca-revocation"))
    confirm = RevocationConfirmForm(request.POST)
    if not confirm.is_valid():
        messages.error(
            request,
            "The confirmation was incomplete or named certificates that do not exist; nothing was revoked. "
            "Choose the certificates again.",
        )
        return back
    by = acting_user(request)
    reason = RevocationReason(confirm.cleaned_data["reason"])
    invalidity_date: dt.datetime | None = confirm.cleaned_data["invalidity_date"]
    certificates: list[Certificate] = list(confirm.cleaned_data["certificates"])
    revoked: list[Certificate] = []
    for certificate in certificates:
        if any(c.pk == certificate.pk for c in revoked):
            continue  # revoked already in this step, with an earlier certificate on the same key
        # revoked with it for key compromise (the service reads the list again under its locks)
        siblings = key_siblings(certificate) if reason == RevocationReason.KEY_COMPROMISE else []
        try:
            revoke_certificate(certificate=certificate, reason=reason, by=by, invalidity_date=invalidity_date)
        except CrlNotPublished as exc:
            revoked += [certificate, *siblings]
            messages.warning(request, str(exc))
        except AlreadyRevoked:
            messages.warning(
                request, f"Certificate {certificate.serial} was revoked already; left as it was."
            )
        except CAError as exc:
            messages.error(request, f"Certificate {certificate.serial} was not revoked: {exc}")
        else:
            revoked += [certificate, *siblings]
    log_admin_decision(request, revoked, f"Revoked ({reason.label.lower()}).")
    if revoked:
        serials = ", ".join(c.serial for c in revoked)
        messages.success(
            request,
            f"Revoked {len(revoked)} certificate{'s' if len(revoked) != 1 else ''} "
            f"({reason.label.lower()}): {serials}.",
        )
    for ca in {c.ca_id: c.ca for c in revoked}.values():
        latest = CrlPublication.objects.filter(ca=ca).defer("der").order_by("-number").first()
        if latest is not None:
            messages.info(
                request,
                f"CRL #{latest.number} of {ca.slug} lists {latest.entries} "
                f"entr{'ies' if latest.entries != 1 else 'y'}; front servers pick it up on their next sync.",
            )
    return back


@require_POST
def republish_view(request: HttpRequest, admin_site: AdminSite, ca_id: int) -> HttpResponse:
    """Sign a fresh CRL for one CA now."""
    _require_revoke_permission(request)
    ca = get_object_or_404(CertificateAuthority, pk=ca_id)
    try:
        crl = publish_crl(ca=ca, by=acting_user(request))
    except CAError as exc:
        messages.error(request, f"The CRL of {ca.slug} could not be signed: {exc}")
    else:
        messages.success(
            request,
            f"Published CRL #{crl.number} of {ca.slug} with {crl.entries} "
            f"entr{'ies' if crl.entries != 1 else 'y'}, next update {crl.next_update:%Y-%m-%d %H:%M} UTC.",
        )
    return HttpResponseRedirect(reverse("admin:ca-revocation"))
