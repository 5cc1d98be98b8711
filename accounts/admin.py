from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin[Profile]):
    """Who verified which address when. Read-only: verification happens through the e-mailed link."""

    list_display = ("user", "verified_email", "email_verified_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "verified_email")
    readonly_fields = ("user", "verified_email", "email_verified_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
