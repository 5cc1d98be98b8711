from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import mark_email_verified
from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.services.authorities import create_ca


class Command(BaseCommand):
    help = (
        "Development only (DJANGO_DEBUG=true): create a development CA and an 'admin' superuser on the "
        "first start and print the admin login."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--admin", default="admin", help="User name of the development administrator.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "dev_setup is for development only; set DJANGO_DEBUG=true (never in production)."
            )
        if not CertificateAuthority.objects.exists():
            try:
                ca = create_ca(name="Development Client CA", days=3650)
            except CAError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"created the development CA '{ca.slug}' ({ca.subject})")
        password_file = Path(settings.DATA_DIR) / "dev-admin-password"
        user_model = get_user_model()
        username = options["admin"]
        if not user_model._default_manager.filter(username=username).exists():
            password = secrets.token_urlsafe(12)
            user = user_model._default_manager.create_superuser(
                username=username, email=f"{username}@example.com", password=password
            )
            mark_email_verified(user)
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
        try:
            shown = password_file.read_text().strip()
        except OSError:
            shown = f"(unknown: set one with python manage.py changepassword {username})"
        base = settings.ENROLL_PUBLIC_URL
        self.stdout.write(
            self.style.SUCCESS(f"Admin login: {base}/admin/  user: {username}  password: {shown}")
        )
        for ca in CertificateAuthority.objects.all():
            self.stdout.write(
                f"CA {ca.slug}: certificate {ca.public_url('ca:cert-pem')}  CRL {ca.public_url('ca:crl-pem')}"
            )
