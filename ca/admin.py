"""Django admin for the CA: certificates, CAs, CRL publications, front servers, SCEP RA certificates and the
audit log, read-only.

Nothing here edits a CA record: certificates are never edited, revocations go through the revocation
screen (:mod:`ca.admin_views`, ``admin:ca-revocation``) and :func:`ca.services.revoke_certificate`, CRLs
through :func:`ca.services.publish_crl`, and the audit log is written by :func:`ca.audit.record` only.
Add, change and delete are refused for everyone, superusers included, with one exception: an operator
may add a blocked key (never change or remove one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from ca import admin_views
from ca.admin_views import badge, compact_hex, decimal_id, hex_search
from ca.clock import utcnow
from ca.models import (
    AuditEntry,
    BlockedKey,
    BlockedKeySource,
    Certificate,
    CertificateAuthority,
    CertificateQuerySet,
    CertificateStatus,
    CrlPublication,
    FrontServer,
    ScepRaCertificate,
)
from ca.pki.pem import pem_armor

if TYPE_CHECKING:
    _CertificateAdmin = admin.ModelAdmin[Certificate]
    _AuthorityAdmin = admin.ModelAdmin[CertificateAuthority]
    _CrlAdmin = admin.ModelAdmin[CrlPublication]
    _AuditAdmin = admin.ModelAdmin[AuditEntry]
    _BlockedKeyAdmin = admin.ModelAdmin[BlockedKey]
    _FrontServerAdmin = admin.ModelAdmin[FrontServer]
    _ScepRaAdmin = admin.ModelAdmin[ScepRaCertificate]
else:
    _CertificateAdmin = _AuthorityAdmin = _CrlAdmin = _AuditAdmin = _BlockedKeyAdmin = admin.ModelAdmin
    _FrontServerAdmin = _ScepRaAdmin = admin.ModelAdmin

STATUS_COLORS = {
    CertificateStatus.VALID: "green",
    CertificateStatus.REVOKED: "red",
    CertificateStatus.EXPIRED: "grey",
    CertificateStatus.NOT_YET_VALID: "amber",
}


class ReadOnlyAdminMixin:
    """No add, change or delete for anyone; the view permission (or superuser) lets people look."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CertificateStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (CertificateStatus.VALID, "Valid"),
            (CertificateStatus.REVOKED, "Revoked"),
            (CertificateStatus.EXPIRED, "Expired"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        assert isinstance(queryset, CertificateQuerySet)  # made by Certificate.objects
        now = utcnow()
        match self.value():
            case CertificateStatus.VALID:
                return queryset.valid_at(now)
            case CertificateStatus.REVOKED:
                return queryset.revoked()
            case CertificateStatus.EXPIRED:
                return queryset.expired_at(now)
        return queryset


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdminMixin, _CertificateAdmin):
    list_display = ["serial_display", "device_name", "subject", "owner", "ca", "not_after", "status_badge"]
    list_filter = [CertificateStatusFilter, "ca"]
    list_select_related = ["ca", "owner", "revocation"]
    search_fields = [
        "serial",
        "subject",
        "owner__username",
        "owner__email",
        "fingerprint_sha256",
        "device_name",
    ]
    search_help_text = (
        "Serial (hex, with or without colons, any case), subject, owner's username or e-mail, "
        "SHA-256 fingerprint, device name."
    )
    actions = ["revoke_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "serial_display",
                    "serial_hex",
                    "device_name",
                    "subject",
                    "owner",
                    "ca",
                    "status_badge",
                ]
            },
        ),
        ("Validity", {"fields": ["not_before", "not_after", "created_at"]}),
        ("Revocation", {"fields": ["revocation_details"]}),
        (
            "Key and request",
            {"fields": ["fingerprint_sha256", "spki_sha256", "request_sha256", "profile", "pem"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Certificate]:
        certificates = super().get_queryset(request)
        assert isinstance(certificates, CertificateQuerySet)  # made by Certificate.objects
        return certificates.issued().defer("der")

    @admin.display(description="serial", ordering="serial")
    def serial_display(self, obj: Certificate) -> str:
        return format_html('<code title="{}">{}</code>', obj.serial_colons, obj.serial)

    @admin.display(description="serial, as openssl and browsers print it")
    def serial_hex(self, obj: Certificate) -> str:
        return format_html("<code>{}</code>", obj.serial_colons)

    @admin.display(description="status")
    def status_badge(self, obj: Certificate) -> str:
        status = obj.status_at(utcnow())
        return badge(str(status.label), STATUS_COLORS[status])

    @admin.display(description="revocation")
    def revocation_details(self, obj: Certificate) -> str:
        if not hasattr(obj, "revocation"):
            return "Not revoked."
        revocation = obj.revocation
        parts = [
            ("Reason", revocation.get_reason_display()),
            ("Revoked at", f"{revocation.revoked_at:%Y-%m-%d %H:%M:%S} UTC"),
            ("Revoked by", str(revocation.revoked_by or "the operator (command line) or the system")),
        ]
        if revocation.invalidity_date is not None:
            parts.append(("Invalidity date", f"{revocation.invalidity_date:%Y-%m-%d %H:%M:%S} UTC"))
        return format_html_join(mark_safe("<br>"), "{}: {}", parts)

    @admin.display(description="certificate (PEM)")
    def pem(self, obj: Certificate) -> str:
        text = pem_armor(der=bytes(obj.der), label="CERTIFICATE").decode("ascii")
        return format_html('<pre class="enroll-pem">{}</pre>', text)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Certificate], search_term: str
    ) -> tuple[QuerySet[Certificate], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        extra = hex_search(search_term, exact=("fingerprint_sha256", "spki_sha256"), serial="serial")
        if extra is not None:
            results = results | queryset.filter(extra)
        return results, may_have_duplicates

    # --- revocation ---

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return admin_views.can_revoke(request)

    @admin.action(description="Revoke selected certificates…", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Certificate]) -> HttpResponse:
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(f"{reverse('admin:ca-revocation')}?{urlencode({'ids': ids})}")

    def get_urls(self) -> list[URLPattern]:
        site = self.admin_site

        def revocation(request: HttpRequest) -> HttpResponse:
            return admin_views.revocation_view(request, site)

        def republish(request: HttpRequest, ca_id: int) -> HttpResponse:
            return admin_views.republish_view(request, site, ca_id)

        return [
            path("revocation/", site.admin_view(revocation), name="ca-revocation"),
            path("revocation/republish/<int:ca_id>/", site.admin_view(republish), name="ca-crl-republish"),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_revoke": admin_views.can_revoke(request)}
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_revoke": admin_views.can_revoke(request)}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(ReadOnlyAdminMixin, _AuthorityAdmin):
    list_display = ["slug", "name", "parent", "is_default", "state", "key_type", "not_after", "public_links"]
    list_select_related = ["parent"]
    fields = [
        "slug",
        "name",
        "parent",
        "is_default",
        "state",
        "revoked_at",
        "revocation_reason",
        "revoked_by",
        "subject",
        "serial",
        "key_type",
        "key_file",
        "not_before",
        "not_after",
        "fingerprint_sha256",
        "created_at",
        "public_urls",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CertificateAuthority]:
        return super().get_queryset(request).defer("certificate_der")

    @admin.display(description="state")
    def state(self, obj: CertificateAuthority) -> str:
        if obj.revoked_at is None:
            return "in use"
        return format_html(
            "<strong>revoked</strong> {} UTC ({})",
            f"{obj.revoked_at:%Y-%m-%d %H:%M}",
            obj.get_revocation_reason_display(),
        )

    @admin.display(description="public files")
    def public_links(self, obj: CertificateAuthority) -> str:
        links = [
            (reverse(name, kwargs={"slug": obj.slug}), label)
            for name, label in [
                ("ca:cert-der", "CA cert"),
                ("ca:cert-pem", "PEM"),
                ("ca:crl-der", "CRL"),
                ("ca:crl-pem", "CRL PEM"),
            ]
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    @admin.display(description="public URLs (as written into certificates)")
    def public_urls(self, obj: CertificateAuthority) -> str:
        urls = [
            (label, url, url)
            for label, url in [
                ("CA certificate (DER)", obj.public_url("ca:cert-der")),
                ("CA certificate (PEM)", obj.public_url("ca:cert-pem")),
                ("CRL (DER)", obj.public_url("ca:crl-der")),
                ("CRL (PEM, for nginx and Apache)", obj.public_url("ca:crl-pem")),
                ("OCSP (every CA)", settings.ENROLL_PUBLIC_URL + reverse("ca:responder")),
            ]
        ]
        return format_html_join(mark_safe("<br>"), '{}: <a href="{}">{}</a>', urls)


@admin.register(CrlPublication)
class CrlPublicationAdmin(ReadOnlyAdminMixin, _CrlAdmin):
    list_display = ["number", "ca", "this_update", "next_update", "entries", "sha256", "created_at"]
    list_filter = ["ca"]
    list_select_related = ["ca"]
    search_fields = ["=number", "sha256"]
    date_hierarchy = "this_update"
    fields = ["ca", "number", "this_update", "next_update", "entries", "size", "sha256", "created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CrlPublication]:
        return super().get_queryset(request).defer("der")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[CrlPublication], search_term: str
    ) -> tuple[QuerySet[CrlPublication], bool]:
        term = search_term.strip()
        by_hash = Q(sha256__icontains=term)
        if term.isascii() and term.isdigit():
            # Digits are a CRL number, or a piece of a SHA-256 that happens to hold no letter.
            number = decimal_id(term)
            return queryset.filter(by_hash | Q(number=number) if number is not None else by_hash), False
        return queryset.filter(by_hash), False

    @admin.display(description="size (bytes)")
    def size(self, obj: CrlPublication) -> int:
        return len(bytes(obj.der))


@admin.register(FrontServer)
class FrontServerAdmin(ReadOnlyAdminMixin, _FrontServerAdmin):
    """Registered front servers, read-only: they are registered with ``manage.py frontserver add NAME``,
    which prints the token once (the private key is never stored, so there is nothing to show here)."""

    list_display = ["name", "carried_cas", "last_report_at", "last_outcome", "interval", "heartbeat"]
    list_filter = ["last_outcome"]
    search_fields = ["name"]
    fields = [
        "name",
        "carried_cas",
        "created_at",
        "key_rotated_at",
        "last_report_at",
        "last_outcome",
        "last_error",
        "interval",
        "heartbeat",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FrontServer]:
        return super().get_queryset(request).defer("public_key").prefetch_related("cas")

    @admin.display(description="CAs")
    def carried_cas(self, obj: FrontServer) -> str:
        return ", ".join(ca.slug for ca in obj.cas.all())


@admin.register(ScepRaCertificate)
class ScepRaCertificateAdmin(ReadOnlyAdminMixin, _ScepRaAdmin):
    """The SCEP RA certificates of CAs whose own key cannot decrypt (EC CAs), read-only: one is made on first
    use, before the current one expires, or with ``manage.py scep_ra``. Its key stays encrypted in the CA
    key folder and never shows here. SCEP clients pin the fingerprint (scepclient's ``-ca-fingerprint``)."""

    list_display = ["ca", "subject", "serial_display", "not_before", "not_after", "status_badge"]
    list_filter = ["ca"]
    list_select_related = ["ca"]
    search_fields = ["serial", "subject", "fingerprint_sha256", "ca__slug"]
    search_help_text = "Serial (hex), subject, SHA-256 fingerprint, CA slug."
    fields = [
        "ca",
        "subject",
        "serial_display",
        "not_before",
        "not_after",
        "status_badge",
        "fingerprint_sha256",
        "created_at",
        "pem",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScepRaCertificate]:
        return super().get_queryset(request).defer("certificate_der")

    @admin.display(description="serial", ordering="serial")
    def serial_display(self, obj: ScepRaCertificate) -> str:
        return format_html("<code>{}</code>", obj.serial)

    @admin.display(description="status")
    def status_badge(self, obj: ScepRaCertificate) -> str:
        now = utcnow()
        status = (
            CertificateStatus.NOT_YET_VALID
            if now < obj.not_before
            else CertificateStatus.EXPIRED
            if obj.not_after <= now
            else CertificateStatus.VALID
        )
        return badge(str(status.label), STATUS_COLORS[status])

    @admin.display(description="certificate (PEM)")
    def pem(self, obj: ScepRaCertificate) -> str:
        text = pem_armor(der=bytes(obj.certificate_der), label="CERTIFICATE").decode("ascii")
        return format_html('<pre class="enroll-pem">{}</pre>', text)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ScepRaCertificate], search_term: str
    ) -> tuple[QuerySet[ScepRaCertificate], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        extra = hex_search(search_term, exact=("fingerprint_sha256",), serial="serial")
        if extra is not None:
            results = results | queryset.filter(extra)
        return results, may_have_duplicates


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, _AuditAdmin):
    """The audit log: visible to staff with the view permission, never editable, even by superusers."""

    list_display = [
        "created_at",
        "event",
        "actor_display",
        "subject_user",
        "ca_slug",
        "serial",
        "short_request_sha256",
        "crl_number",
        "detail",
    ]
    list_filter = ["event", "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["serial", "request_sha256", "actor_name", "subject_user", "ca_slug"]
    search_help_text = "Serial (any format), request SHA-256, actor's or account's username, CRL number."
    fields = [
        "created_at",
        "event",
        "actor_display",
        "subject_user",
        "ca_slug",
        "serial",
        "request_sha256",
        "crl_number",
        "detail",
    ]
    actions = None

    @admin.display(description="actor", ordering="actor_name")
    def actor_display(self, obj: AuditEntry) -> str:
        return obj.actor_name or "system / command line"

    @admin.display(description="request SHA-256")
    def short_request_sha256(self, obj: AuditEntry) -> str:
        if not obj.request_sha256:
            return ""
        return format_html('<code title="{}">{}…</code>', obj.request_sha256, obj.request_sha256[:16])

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry], search_term: str
    ) -> tuple[QuerySet[AuditEntry], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if (number := decimal_id(term)) is not None:
            results = results | queryset.filter(crl_number=number)
        extra = hex_search(term, exact=("request_sha256",), serial="serial")
        if extra is not None:
            results = results | queryset.filter(extra)
        return results, may_have_duplicates


# --- blocked keys ------------------------------------------------------------------------------------


class BlockKeyForm(forms.ModelForm[BlockedKey]):
    """An operator blocks a key by the SHA-256 of its SubjectPublicKeyInfo (colons, spaces, any case)."""

    spki_sha256 = forms.CharField(
        label="SPKI SHA-256",
        max_length=200,
        help_text="SHA-256 of the key's DER SubjectPublicKeyInfo, as the request and certificate pages "
        "show it (64 hexadecimal digits; colons and spaces are ignored).",
    )

    class Meta:
        model = BlockedKey
        fields = ["spki_sha256", "detail"]
        labels = {"detail": "Why"}

    def clean_spki_sha256(self) -> str:
        value = compact_hex(self.cleaned_data["spki_sha256"])
        if value is None or len(value) != 64:
            raise forms.ValidationError(
                "Enter the SPKI SHA-256 as 64 hexadecimal digits (colons and spaces are fine)."
            )
        if BlockedKey.objects.filter(spki_sha256=value).exists():
            raise forms.ValidationError("This key is blocked already.")
        return value


@admin.register(BlockedKey)
class BlockedKeyAdmin(_BlockedKeyAdmin):
    """Keys no certificate is issued for: added by revocations for key compromise, or here by an operator.

    Existing rows are read-only and stay: unblocking a compromised key would let it be certified again.
    """

    list_display = ["short_spki", "source", "certificate_link", "detail", "created_at"]
    list_filter = ["source", "created_at"]
    list_select_related = ["certificate"]
    search_fields = ["spki_sha256", "detail"]
    search_help_text = "SPKI SHA-256 (hex, colons allowed, or a part of it), or words of the reason."
    readonly_fields = ["spki_sha256", "source", "certificate_link", "detail", "created_at"]
    form = BlockKeyForm
    actions = None

    def has_change_permission(self, request: HttpRequest, obj: BlockedKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BlockedKey | None = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: BlockedKey | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request: HttpRequest, obj: BlockedKey | None = None) -> tuple[str, ...]:
        return ("spki_sha256", "detail") if obj is None else tuple(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: BlockedKey, form: Any, change: bool) -> None:
        obj.source = BlockedKeySource.OPERATOR
        obj.created_at = utcnow()
        super().save_model(request, obj, form, change)

    @admin.display(description="SPKI SHA-256", ordering="spki_sha256")
    def short_spki(self, obj: BlockedKey) -> str:
        return format_html("<code>{}</code>", obj.spki_sha256)

    @admin.display(description="certificate")
    def certificate_link(self, obj: BlockedKey) -> str:
        if obj.certificate is None:
            return "-"
        url = reverse("admin:ca_certificate_change", args=[obj.certificate.pk])
        return format_html('<a href="{}"><code>{}</code></a>', url, obj.certificate.serial_colons)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[BlockedKey], search_term: str
    ) -> tuple[QuerySet[BlockedKey], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        compact = compact_hex(search_term)
        if compact is not None:
            results = results | queryset.filter(spki_sha256__contains=compact)
        return results, may_have_duplicates
