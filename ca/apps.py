from __future__ import annotations

from django.apps import AppConfig


class CaConfig(AppConfig):
    name = "ca"
    verbose_name = "Certificate authority"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from ca.checks import check_public_url, check_unstored_serials

        checks.register(check_public_url)
        checks.register(check_unstored_serials)

        from django.db.models.signals import post_delete, post_save

        from ca.models import CrlPublication, Revocation
        from ca.services.crl_serving import forget_newest_crl

        # A revocation or CRL written in this process: the next CRL download reads the newest CRL again.
        for signal in (post_save, post_delete):
            signal.connect(forget_newest_crl, sender=Revocation, dispatch_uid="ca.crl_serving.revocation")
            signal.connect(forget_newest_crl, sender=CrlPublication, dispatch_uid="ca.crl_serving.crl")
