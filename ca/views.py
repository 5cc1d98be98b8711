"""Public CA endpoints (no login): the CA certificate and the CRL, in DER and PEM.

Responses carry an ETag (SHA-256 of the bytes), Last-Modified and a Cache-Control max-age that never
reaches past the CRL's nextUpdate; conditional requests get 304.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.utils.cache import get_conditional_response, patch_cache_control
from django.utils.http import http_date
from django.views.decorators.http import require_safe

from ca import services
from ca.clock import utcnow
from ca.models import CertificateAuthority

CA_CERT_MAX_AGE = 3600


def _respond(
    request: HttpRequest,
    *,
    body: bytes,
    content_type: str,
    filename: str,
    etag: str,
    last_modified: dt.datetime,
    max_age: int,
) -> HttpResponseBase:
    response = HttpResponse(body, content_type=content_type)
    response["ETag"] = f'"{etag}"'
    response["Last-Modified"] = http_date(last_modified.timestamp())
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    patch_cache_control(response, public=True, max_age=max(0, max_age))
    conditional = get_conditional_response(
        request, etag=response["ETag"], last_modified=int(last_modified.timestamp()), response=response
    )
    return conditional if conditional is not None else response


@require_safe
def ca_certificate(request: HttpRequest, slug: str, fmt: str) -> HttpResponseBase:
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    if fmt == "pem":
        body, content_type, name = services.ca_certificate_pem(ca), "application/x-pem-file", f"{slug}.pem"
    else:
        body, content_type, name = bytes(ca.certificate_der), "application/pkix-cert", f"{slug}.crt"
    return _respond(
        request,
        body=body,
        content_type=content_type,
        filename=name,
        etag=ca.fingerprint_sha256,
        last_modified=ca.created_at,
        max_age=CA_CERT_MAX_AGE,
    )


@require_safe
def crl(request: HttpRequest, slug: str, fmt: str) -> HttpResponseBase:
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    now = utcnow()
    try:
        publication = services.current_crl(ca=ca, now=now)
    except services.CAError:
        response = HttpResponse(
            "The CRL cannot be signed right now and the last one has expired. "
            "The operator must check the CA key and passphrase and run manage.py publish_crl.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = "60"
        return response
    seconds_left = int((publication.next_update - now).total_seconds())
    max_age = min(settings.ENROLL_CRL_MAX_AGE, seconds_left)
    if fmt == "pem":
        body, content_type, name = services.crl_pem(publication), "application/x-pem-file", f"{slug}.crl.pem"
        etag = f"{publication.sha256}-pem"
    else:
        body, content_type, name = bytes(publication.der), "application/pkix-crl", f"{slug}.crl"
        etag = publication.sha256
    return _respond(
        request,
        body=body,
        content_type=content_type,
        filename=name,
        etag=etag,
        last_modified=publication.this_update,
        max_age=max_age,
    )
