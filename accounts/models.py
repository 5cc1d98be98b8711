from __future__ import annotations

from django.conf import settings
from django.db import models


class Profile(models.Model):
    """Per-account facts beyond Django's user: whether the e-mail address was verified."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    email_verified_at = models.DateTimeField(null=True, blank=True)
    verified_email = models.EmailField(blank=True, help_text="The address that was verified.")

    def __str__(self) -> str:
        return f"profile of {self.user}"
