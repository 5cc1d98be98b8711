"""``{% dev_mail_url as url %}``: the development mail page's address in DEBUG, else an empty string
(templates/base.html links it from the footer only in development)."""

from __future__ import annotations

from django import template
from django.conf import settings
from django.urls import reverse

register = template.Library()


@register.simple_tag
def dev_mail_url() -> str:
    return reverse("dev-mail") if settings.DEBUG else ""
