from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import User
from django.http import HttpRequest

from accounts.forms import checked_username
from accounts.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin[Profile]):
    """Who verified which address when, and each person's language. Read-only: verification happens through
    the e-mailed link, the language is the person's choice (sign-up, the language switcher)."""

    list_display = ("user", "verified_email", "email_verified_at", "language")
    list_filter = ("language",)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "verified_email")
    readonly_fields = ("user", "verified_email", "email_verified_at", "language")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


if TYPE_CHECKING:
    _UserChangeForm = UserChangeForm[User]
    _UserAdmin = UserAdmin[User]
else:
    _UserChangeForm = UserChangeForm
    _UserAdmin = UserAdmin


class AccountCreationForm(AdminUserCreationForm):
    """The admin's add-user form, with the portal's username rules (accounts.usernames)."""

    def clean_username(self) -> str:
        return checked_username(self.cleaned_data["username"])


class AccountChangeForm(_UserChangeForm):
    """The admin's user form: a renamed account follows the username rules; an unchanged name is left as is
    (``manage.py check_usernames`` reports old ones)."""

    def clean_username(self) -> str:
        name = self.cleaned_data["username"]
        if name == self.initial.get("username"):
            return str(name)
        return checked_username(name, exclude_pk=self.instance.pk)


class AccountAdmin(_UserAdmin):
    add_form = AccountCreationForm
    form = AccountChangeForm


admin.site.unregister(User)
admin.site.register(User, AccountAdmin)
