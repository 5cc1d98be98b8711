from __future__ import annotations

from django.urls import path

from enroll import certificate_views, device_views, keygen_views, spkac_views, views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("requests/new/", views.request_new, name="request-new"),
    path("requests/spkac/", spkac_views.request_spkac, name="request-spkac"),
    path("requests/generate/", keygen_views.keygen, name="keygen"),
    path("requests/generate/submit/", keygen_views.keygen_submit, name="keygen-submit"),
    path("requests/<int:pk>/", views.request_detail, name="request-detail"),
    path("requests/<int:pk>/device/", views.request_device, name="request-device"),
    path("certificates/<int:pk>/", certificate_views.certificate_detail, name="certificate-detail"),
    path("certificates/<int:pk>/device/", certificate_views.certificate_device, name="certificate-device"),
    path(
        "certificates/<int:pk>/download/<str:fmt>/",
        certificate_views.certificate_download,
        name="certificate-download",
    ),
    path("certificates/<int:pk>/revoke/", certificate_views.certificate_revoke, name="certificate-revoke"),
    path("certificates/<int:pk>/renew/", certificate_views.certificate_renew, name="certificate-renew"),
    path("devices/", device_views.devices, name="devices"),
    path("devices/codes/<int:pk>/revoke/", device_views.revoke_code, name="device-code-revoke"),
    path("help/", views.help_page, name="help"),
]
