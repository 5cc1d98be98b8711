from __future__ import annotations

from django.apps import AppConfig


class EnrollConfig(AppConfig):
    name = "enroll"
    verbose_name = "Enrollment"
    default_auto_field = "django.db.models.BigAutoField"
