from __future__ import annotations

from django.apps import AppConfig


class CaConfig(AppConfig):
    name = "ca"
    verbose_name = "Certificate authority"
    default_auto_field = "django.db.models.BigAutoField"
