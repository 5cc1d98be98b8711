from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import signals
        from django.core import checks

        from accounts import auditing
        from accounts.checks import check_email_backend

        # Account events in the audit log (accounts.auditing). After django-axes' receivers (axes comes
        # first in INSTALLED_APPS), so a failed login's entry carries axes' count.
        signals.user_logged_in.connect(auditing.on_logged_in, dispatch_uid="accounts.audit.login")
        signals.user_logged_out.connect(auditing.on_logged_out, dispatch_uid="accounts.audit.logout")
        signals.user_login_failed.connect(auditing.on_login_failed, dispatch_uid="accounts.audit.failed")

        # A deployment check (``manage.py check --deploy``), like Django's security.W0xx: the warning does
        # not clutter every management command's output on a host that sends no mail on purpose.
        checks.register(check_email_backend, deploy=True)
