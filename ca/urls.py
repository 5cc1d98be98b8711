from __future__ import annotations

from django.urls import path

from ca import views

app_name = "ca"

urlpatterns = [
    path("pki/health.json", views.health, name="health"),
    path("pki/<slug:slug>.crt", views.ca_certificate, {"fmt": "der"}, name="cert-der"),
    path("pki/<slug:slug>.pem", views.ca_certificate, {"fmt": "pem"}, name="cert-pem"),
    path("pki/<slug:slug>.crl", views.crl, {"fmt": "der"}, name="crl-der"),
    path("pki/<slug:slug>.crl.pem", views.crl, {"fmt": "pem"}, name="crl-pem"),
    path("pki/<slug:slug>/ocsp", views.ocsp, name="ocsp"),
    path("pki/<slug:slug>/ocsp/<path:encoded>", views.ocsp, name="ocsp-get"),
]
