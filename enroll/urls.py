from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from accounts import views as accounts_views
from enroll import devmail_views, est_views, scep_views, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    # The language switcher (templates/_language_switcher.html): Django's set_language, kept per account.
    path("i18n/setlang/", accounts_views.set_language, name="set_language"),
    path("dev/mail/", devmail_views.dev_mail, name="dev-mail"),  # 404 unless DEBUG
    path("favicon.ico", views.favicon, name="favicon"),
    # EST (RFC 7030) for managed devices: the default CA, or the CA named by its slug (docs/DEVICES.md).
    path(".well-known/est/<str:operation>", est_views.est_operation, name="est"),
    path(".well-known/est/<slug:ca>/<str:operation>", est_views.est_operation, name="est-ca"),
    # SCEP (RFC 8894) for managed devices, plain HTTP: the default CA, or the CA named by its slug.
    path("scep", scep_views.scep_operation, name="scep"),
    path("scep/<slug:ca>", scep_views.scep_operation, name="scep-ca"),
    path("", include("ca.urls")),
    path("", include("enroll.portal_urls")),
]
