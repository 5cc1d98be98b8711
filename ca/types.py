"""Type of a user account as the apps see it (``settings.AUTH_USER_MODEL``).

For the type checker this is the configured user model (django-stubs resolves it to
``django.contrib.auth.models.User``); at run time any user model works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import User as Account
else:
    from django.contrib.auth.base_user import AbstractBaseUser as Account

__all__ = ["Account"]
