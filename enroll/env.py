"""Reading settings from the environment, failing loudly on bad values.

Every secret may also be given as ``NAME_FILE``: the path of a file whose content (stripped of the
trailing newline) is the value, the convention of Docker/systemd credentials.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def get(name: str, default: str | None = None) -> str | None:
    """The value of ``name``, or the content of the file named by ``name_FILE``, or ``default``."""
    value = os.environ.get(name)
    file_name = os.environ.get(f"{name}_FILE")
    if value is not None and file_name:
        raise ImproperlyConfigured(f"Set either {name} or {name}_FILE, not both.")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name} cannot be read: {exc.strerror}.") from None
    return default if value is None else value


def get_bool(name: str, *, default: bool) -> bool:
    value = get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true or false.")


def get_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    value = get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if not minimum <= number <= maximum:
        raise ImproperlyConfigured(f"{name}={number} is out of range ({minimum} to {maximum}).")
    return number


def get_list(name: str, *, default: list[str]) -> list[str]:
    value = get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def get_url(name: str, *, default: str) -> str:
    value = (get(name) or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name}={value!r} must be an absolute http(s) URL without query, e.g. https://pki.example.com"
        )
    return value


_RATE = re.compile(r"([1-9][0-9]*)/([1-9][0-9]*)?([smhd])")
_RATE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def get_rate(name: str, *, default: str) -> str:
    """A rate limit such as ``10/h``, ``5/m`` or ``30/10m`` (at most ``N/d``); ``off`` for none (``""``)."""
    value = (get(name) or default).strip().lower()
    if value == "off":
        return ""
    match = _RATE.fullmatch(value)
    if match is None or int(match[2] or 1) * _RATE_SECONDS[match[3]] > 86400:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate: write COUNT/PERIOD with a period in s, m, h or d of at most a "
            "day, e.g. 10/h, 5/m or 30/10m (or off)."
        )
    return value
