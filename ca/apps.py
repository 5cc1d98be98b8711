from __future__ import annotations

from django.apps import AppConfig


class CaConfig(AppConfig):
    name = "ca"
    verbose_name = "Certificate authority"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from ca.checks import check_public_url

        checks.register(check_public_url)
