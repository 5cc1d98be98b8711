"""Public CA endpoints (no login): the CA certificate and the CRL, in DER and PEM; OCSP; the front servers'
signed install reports (``POST /pki/report``); ``health.json``.

Downloads carry an ETag (SHA-256 of the bytes), Last-Modified and a Cache-Control max-age that never
reaches past the CRL's nextUpdate; conditional requests get 304. A download records nothing: which CRL a
front server has comes only from its signed reports (:mod:`ca.services.frontservers`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib

from django.conf import settings
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotModified,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.utils.cache import get_conditional_response, patch_cache_control
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

from ca.clock import utcnow
from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.pki import node_reports
from ca.services import frontservers, rollover
from ca.services.crl_serving import crl_to_serve
from ca.services.export import ca_certificate_pem
from ca.services.ocsp import ocsp_response
from ca.services.propagation import all_green, crl_healths

CA_CERT_MAX_AGE = 3600


#: Request headers that make a GET conditional (RFC 9110 section 13.1).
_PRECONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")


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
    """The body with its validators, or 304/412 for a conditional request (RFC 9110 section 13.2.2).

    Front servers and ``enroll-crl-sync`` poll with the exact ETag they got: that case (If-None-Match equal
    to the current ETag, no If-Match or If-Unmodified-Since) answers 304 at once with the headers RFC 9110
    section 15.4.5 asks a 304 to repeat; every other conditional request goes through Django's
    ``get_conditional_response``, which gives the same answer for that case.
    """
    quoted = f'"{etag}"'
    validators = {
        "ETag": quoted,
        "Last-Modified": http_date(last_modified.timestamp()),
        "Cache-Control": f"public, max-age={max(0, max_age)}",  # what patch_cache_control writes
    }
    meta = request.META
    conditional = any(header in meta for header in _PRECONDITIONS)
    if (
        conditional
        and meta.get("HTTP_IF_NONE_MATCH") in (quoted, f"W/{quoted}")
        and "HTTP_IF_MATCH" not in meta
        and "HTTP_IF_UNMODIFIED_SINCE" not in meta
    ):
        return HttpResponseNotModified(headers=validators)
    response = HttpResponse(body, content_type=content_type, headers=validators)
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    if not conditional:
        return response
    answer = get_conditional_response(
        request, etag=quoted, last_modified=int(last_modified.timestamp()), response=response
    )
    return answer if answer is not None else response


@require_safe
def ca_certificate(request: HttpRequest, slug: str, fmt: str) -> HttpResponseBase:
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    if fmt == "pem":
        body, content_type, name = ca_certificate_pem(ca), "application/x-pem-file", f"{slug}.pem"
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


#: A new key generation reaches front servers within a minute even through a cache that honours this.
CA_BUNDLE_MAX_AGE = 60


@require_safe
def ca_bundle(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Every key generation still valid of the CA and the CAs above it, with the link certificates
    between generations (what ``enroll-crl-sync --ca-bundle-url`` reads; any generation's slug answers)."""
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    authorities = rollover.bundle_authorities(ca)
    body = rollover.ca_bundle(ca, authorities=authorities)
    newest = max(generation.created_at for generation in authorities)
    return _respond(
        request,
        body=body,
        content_type="application/x-pem-file",
        filename=f"{slug}-bundle.pem",
        etag=hashlib.sha256(body).hexdigest(),
        last_modified=newest,
        max_age=CA_BUNDLE_MAX_AGE,
    )


@require_safe
def crl(request: HttpRequest, slug: str, fmt: str) -> HttpResponseBase:
    now = utcnow()
    try:
        publication = crl_to_serve(slug=slug, now=now)
    except CAError:
        response = HttpResponse(
            "The CRL cannot be signed right now and the last one has expired. "
            "The operator must check the CA key and passphrase and run manage.py publish_crl.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = "60"
        return response
    if publication is None:
        raise Http404("No such CA.")
    seconds_left = int((publication.next_update - now).total_seconds())
    max_age = min(settings.ENROLL_CRL_MAX_AGE, seconds_left)
    if fmt == "pem":
        body, content_type, name = publication.pem, "application/x-pem-file", f"{slug}.crl.pem"
        etag = f"{publication.sha256}-pem"
    else:
        body, content_type, name = publication.der, "application/pkix-crl", f"{slug}.crl"
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


#: Largest OCSP request read (a request for one certificate is about 100 bytes; with a nonce, 150).
MAX_OCSP_REQUEST_BYTES = 4096


@csrf_exempt  # OCSP clients (nginx, openssl) POST DER, not forms; nothing changes state
@require_http_methods(["GET", "HEAD", "POST"])
def ocsp(request: HttpRequest, slug: str | None = None, encoded: str | None = None) -> HttpResponseBase:
    """RFC 6960 responder: POST with a DER body, or GET with the base64 request in the path (A.1).

    Every URL answers for every CA the portal hosts: the request's CertID chooses the CA. The slug of a
    per-CA URL is only tried first, and an unknown one is no error: the answer is still the RFC's
    (``unauthorized`` for a CA not hosted here).
    """
    ca = CertificateAuthority.objects.filter(slug=slug).first() if slug else None
    if request.method == "POST":
        if request.content_type != "application/ocsp-request":
            return HttpResponse(
                "Send an OCSP request (application/ocsp-request).\n",
                status=415,
                content_type="text/plain; charset=utf-8",
            )
        body = request.read(MAX_OCSP_REQUEST_BYTES + 1)
    else:
        try:
            body = base64.b64decode((encoded or "").encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            body = b""
    if len(body) > MAX_OCSP_REQUEST_BYTES:
        body = b""  # answered as malformedRequest
    try:
        answer = ocsp_response(ca=ca, request_der=body)
    except CAError:
        unavailable = HttpResponse(status=503)
        unavailable["Retry-After"] = "60"
        return unavailable
    response = HttpResponse(answer.der, content_type="application/ocsp-response")
    if (
        request.method == "POST"
        or answer.has_nonce
        or answer.this_update is None
        or answer.next_update is None
    ):
        response["Cache-Control"] = "no-cache, no-store, max-age=0"
        return response
    response["Last-Modified"] = http_date(answer.this_update.timestamp())
    response["Expires"] = http_date(answer.next_update.timestamp())
    max_age = int((answer.next_update - utcnow()).total_seconds())
    patch_cache_control(response, public=True, max_age=max(0, max_age), no_transform=True)
    response["ETag"] = f'"{hashlib.sha256(answer.der).hexdigest()}"'
    return response


def _text(message: str, *, status: int) -> HttpResponse:
    return HttpResponse(message.rstrip("\n") + "\n", status=status, content_type="text/plain; charset=utf-8")


#: The status each refusal of a report gets.
REFUSAL_STATUS = {
    frontservers.Refusal.MALFORMED: 400,
    frontservers.Refusal.CLOCK_SKEW: 400,
    frontservers.Refusal.UNKNOWN_NODE: 403,
    frontservers.Refusal.BAD_SIGNATURE: 403,
    frontservers.Refusal.REPLAYED: 409,
}


@csrf_exempt  # front servers POST signed JSON, not forms; the signature authenticates it
@require_http_methods(["POST"])
def report(request: HttpRequest) -> HttpResponseBase:
    """A registered front server's signed install report (:mod:`ca.pki.node_reports`): 200 "accepted".

    400 malformed or clock skew (saying by how much), 403 unknown node or bad signature, 409 a nonce seen
    already, 413 too large, 415 not JSON; a refused report changes nothing.
    """
    if request.content_type != node_reports.CONTENT_TYPE:
        return _text(f"Send the report as {node_reports.CONTENT_TYPE}.", status=415)
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > node_reports.MAX_REPORT_BYTES:
        return _text(f"A report is at most {node_reports.MAX_REPORT_BYTES} bytes.", status=413)
    try:
        body = request.read(node_reports.MAX_REPORT_BYTES + 1)
    except OSError:
        return _text("The report could not be read.", status=400)
    if len(body) > node_reports.MAX_REPORT_BYTES:
        return _text(f"A report is at most {node_reports.MAX_REPORT_BYTES} bytes.", status=413)
    signature = request.headers.get(node_reports.SIGNATURE_HEADER, "")
    try:
        frontservers.accept_report(body=body, signature=signature, now=utcnow())
    except frontservers.ReportRefused as exc:
        return _text(str(exc), status=REFUSAL_STATUS[exc.problem])
    return _text("accepted", status=200)


@require_safe
def health(request: HttpRequest) -> HttpResponseBase:
    """Per CA: the newest CRL, its color, and each registered front server's color and installed CRL.

    200 when every CRL and every registered front server is green, 503 otherwise (for monitoring). A
    failed node's error text is shown to staff only (it may name paths and hosts).
    """
    now = utcnow()
    healths = crl_healths(now=now)
    staff = bool(getattr(request, "user", None) and request.user.is_authenticated and request.user.is_staff)
    authorities = []
    for state in healths:
        nodes = []
        for n in state.nodes:
            node: dict[str, object] = {
                "node": n.node,
                "crl_number": n.number,
                "colour": n.color.value,
                "state": n.state.value,
                "installed_seconds_ago": n.installed_seconds_ago,
                "last_report_seconds_ago": n.last_report_seconds_ago,
                "interval": n.interval,
                "heartbeat": n.heartbeat,
            }
            if staff and n.error:
                node["error"] = n.error
            nodes.append(node)
        authorities.append(
            {
                "slug": state.ca.slug,
                "crl_number": state.crl.number if state.crl else None,
                "this_update": state.crl.this_update.isoformat() if state.crl else None,
                "next_update": state.crl.next_update.isoformat() if state.crl else None,
                "seconds_left": state.seconds_left,
                "colour": state.color.value,
                "summary": state.summary,
                "nodes": nodes,
            }
        )
    healthy = all_green(healths)
    response = JsonResponse(
        {"ok": healthy, "now": now.isoformat(), "authorities": authorities}, status=200 if healthy else 503
    )
    response["Cache-Control"] = "no-cache"
    return response
