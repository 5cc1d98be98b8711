from __future__ import annotations

from django.apps import AppConfig


class EnrollConfig(AppConfig):
    name = "enroll"
    verbose_name = "Enrollment"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ca.signals import ca_revoked, certificates_revoked
        from enroll import notifications

        # owners hear of certificates revoked for key compromise (the CA knows no e-mails)
        certificates_revoked.connect(
            notifications.notify_key_compromise, dispatch_uid="enroll.key_compromise"
        )
        # ... and of certificates that stopped working because the CA that issued them was revoked
        ca_revoked.connect(notifications.notify_ca_revoked, dispatch_uid="enroll.ca_revoked")
