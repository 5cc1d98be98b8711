from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from accounts.checks import check_email_backend

        # A deployment check (``manage.py check --deploy``), like Django's security.W0xx: the warning does
        # not clutter every management command's output on a host that sends no mail on purpose.
        checks.register(check_email_backend, deploy=True)
