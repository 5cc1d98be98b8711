from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from enroll import devmail_views, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("dev/mail/", devmail_views.dev_mail, name="dev-mail"),  # 404 unless DEBUG
    path("favicon.ico", views.favicon, name="favicon"),
    path("", include("ca.urls")),
    path("", include("enroll.portal_urls")),
]
