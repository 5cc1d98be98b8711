from __future__ import annotations

from django.urls import path, register_converter

from ca import views


class AnyTextConverter:
    """The rest of the path, whatever it holds: an OCSP GET request is base64 that clients escape in their
    own ways (RFC 6960 appendix A.1), an escaped newline included, which Django's ``<path:>`` (the regex
    ``.+``) does not match. The view judges the text; a path that holds no request is malformedRequest."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AnyTextConverter, "anytext")

app_name = "ca"

#: Where the public CA URLs live (ca.middleware answers the downloads among them early).
PUBLIC_PREFIX = "pki/"

urlpatterns = [
    path(f"{PUBLIC_PREFIX}health.json", views.health, name="health"),
    path(f"{PUBLIC_PREFIX}report", views.report, name="report"),
    # One OCSP responder for every CA (the request's CertID chooses); before <slug>/ocsp, so that
    # /pki/ocsp/<base64> is never read as the per-CA URL of a CA called "ocsp" (a reserved slug).
    path(f"{PUBLIC_PREFIX}ocsp", views.ocsp, name="responder"),
    path(f"{PUBLIC_PREFIX}ocsp/<anytext:encoded>", views.ocsp, name="responder-get"),
    path(f"{PUBLIC_PREFIX}<slug:slug>.crt", views.ca_certificate, {"fmt": "der"}, name="cert-der"),
    path(f"{PUBLIC_PREFIX}<slug:slug>.pem", views.ca_certificate, {"fmt": "pem"}, name="cert-pem"),
    path(f"{PUBLIC_PREFIX}<slug:slug>/bundle.pem", views.ca_bundle, name="bundle"),
    path(f"{PUBLIC_PREFIX}<slug:slug>.crl", views.crl, {"fmt": "der"}, name="crl-der"),
    path(f"{PUBLIC_PREFIX}<slug:slug>.crl.pem", views.crl, {"fmt": "pem"}, name="crl-pem"),
    # The per-CA URLs written into certificates issued before the one URL existed: they answer for every CA.
    path(f"{PUBLIC_PREFIX}<slug:slug>/ocsp", views.ocsp, name="ocsp"),
    path(f"{PUBLIC_PREFIX}<slug:slug>/ocsp/<anytext:encoded>", views.ocsp, name="ocsp-get"),
]
