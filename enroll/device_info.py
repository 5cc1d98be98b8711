"""What a person needs to hand a code to a device: the EST and SCEP addresses and a worked example.

Shared by the owner's page (*Enroll a device*), the admin's "code created" page and
``manage.py enrollment_code``. The addresses are on ``ENROLL_DEVICE_URL`` (the device front server, its
own host name or port: docs/DEVICES.md), else on the portal's own address.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext, ngettext

from accounts.services import portal_url
from enroll.models import EnrollmentCode


def device_base_url() -> str:
    """Where devices reach the portal: ``ENROLL_DEVICE_URL``, else the portal's address."""
    return str(getattr(settings, "ENROLL_DEVICE_URL", "") or "") or portal_url()


@dataclass(frozen=True, slots=True)
class DeviceInstructions:
    """The addresses a device enrolls at and the commands that do it with curl and openssl."""

    est_url: str  # the EST base: .../.well-known/est/
    scep_url: str
    commands: str  # openssl + curl, one command a line


def instructions(*, code: str, device_name: str, username: str) -> DeviceInstructions:
    """The addresses and the commands for ``code`` (shown once, with the code in them)."""
    base = device_base_url().rstrip("/")
    est_url = base + reverse("est", kwargs={"operation": "simpleenroll"}).removesuffix("simpleenroll")
    scep_url = base + reverse("scep") if _has_scep() else ""
    name = device_name or "device"
    file = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "device"
    user = shlex.quote(f"{name if device_name else username}:{code}")
    commands = "\n".join(
        [
            f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {file}.key \\",
            f"    -subj /CN={shlex.quote(file)} -outform DER | base64 > {file}.csr.b64",
            f"curl -sS -u {user} -H 'Content-Type: application/pkcs10' \\",
            f"    --data-binary @{file}.csr.b64 -o {file}.p7.b64 -w '%{{http_code}}\\n' \\",
            f"    {est_url}simpleenroll",
            f"base64 -d {file}.p7.b64 | openssl pkcs7 -inform DER -print_certs -out {file}.pem",
        ]
    )
    return DeviceInstructions(est_url=est_url, scep_url=scep_url, commands=commands)


def _has_scep() -> bool:
    try:
        reverse("scep")
    except NoReverseMatch:  # SCEP is not served by this portal
        return False
    return True


def expiry_words(row: EnrollmentCode, *, now: dt.datetime) -> str:
    """``expires in 23 hours`` / ``expired``: for lists of codes."""
    left = row.expires_at - now
    if left.total_seconds() <= 0:
        return gettext("expired")
    hours = left.total_seconds() / 3600
    if hours < 1:
        minutes = max(1, int(left.total_seconds() // 60))
        return ngettext("expires in %(count)d minute", "expires in %(count)d minutes", minutes) % {
            "count": minutes
        }
    if hours < 48:
        return ngettext("expires in %(count)d hour", "expires in %(count)d hours", int(hours)) % {
            "count": int(hours)
        }
    days = int(hours // 24)
    return ngettext("expires in %(count)d day", "expires in %(count)d days", days) % {"count": days}
