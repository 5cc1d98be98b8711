"""EST (RFC 7030) for managed devices: ``/.well-known/est/`` (default CA) and ``/.well-known/est/<ca>/``.

Thin over :mod:`enroll.flows.devices` (the same flow as the portal's pages) and :mod:`ca.pki.est` (the
wire formats). Operations:

- ``cacerts`` (GET): the CA's certificate and its parents, certs-only PKCS#7, base64;
- ``simpleenroll`` (POST): HTTP Basic with the enrollment code as the password; the username is not
  checked (the account's username or the device name, as the device likes: the code alone names the
  account and the device). 200 with the certificate (certs-only PKCS#7, base64), or 202 with
  ``Retry-After`` while the request waits for an approver; the same request sent again later (same code,
  same public key) is a poll and gets the certificate once issued;
- ``simplereenroll`` (POST): authenticated by the device's current certificate, as the front server
  verified and forwarded it (:func:`accounts.certlogin.read_forwarded_certificate`);
- ``csrattrs`` (GET): what the CA prefers (:func:`ca.pki.est.csr_attributes`).

HTTPS only (RFC 7030 3.2.2): a request that did not arrive over TLS, directly or from a trusted proxy
saying so (``request.is_secure()``, :mod:`accounts.proxies`), is refused before anything is read. Every
error is a 4xx/5xx status with a plain-text reason (RFC 7030 4.2.3); a missing code is 401 with
``WWW-Authenticate: Basic``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import proxies
from accounts.certlogin import read_forwarded_certificate
from ca.models import Certificate, CertificateAuthority
from ca.pki import est
from enroll import flows
from enroll.flows import DeviceOutcome, DeviceOutcomeKind, RefusalCause
from enroll.flows.devices import REENROLL_NOT_OURS
from enroll.models import RequestKind

logger = logging.getLogger(__name__)

REALM = 'Basic realm="EST", charset="UTF-8"'
PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"

NOT_HTTPS = (
    "EST needs HTTPS (RFC 7030): this request came over plain HTTP, so nothing was read. Use the portal's "
    "https:// address for /.well-known/est/. If you sent an enrollment code, ask for a new one."
)
NO_CODE = (
    "Enrollment needs an enrollment code: send it as the password of HTTP Basic authentication "
    "(curl -u DEVICE:CODE). Get a code on the portal's Enroll a device page."
)
NO_CERTIFICATE = (
    "Re-enrollment needs the device's current certificate: connect with it as the TLS client certificate, "
    "to the portal's device address. To enroll without one, use simpleenroll with an enrollment code."
)
UNSUPPORTED = {
    "serverkeygen": "Server-side key generation is not offered: the key is made on the device, always.",
    "fullcmc": "Full CMC is not offered: use simpleenroll and simplereenroll.",
}
STATUS = {
    RefusalCause.BAD_CODE: 401,
    RefusalCause.CODE_UNUSABLE: 403,
    RefusalCause.LOCKED_OUT: 429,
    RefusalCause.BAD_REQUEST: 400,
    RefusalCause.NOT_ALLOWED: 403,
    RefusalCause.REJECTED: 403,
    RefusalCause.UNAVAILABLE: 503,
    RefusalCause.NONE: 400,
}


def text(reason: str, *, status: int) -> HttpResponse:
    """An EST error: the status and the reason in plain text (RFC 7030 4.2.3)."""
    return HttpResponse(reason.rstrip() + "\n", status=status, content_type="text/plain; charset=utf-8")


def base64_answer(der: bytes, content_type: str) -> HttpResponse:
    response = HttpResponse(est.base64_body(der), content_type=content_type)
    response["Content-Transfer-Encoding"] = "base64"
    return response


@csrf_exempt
def est_operation(request: HttpRequest, operation: str, ca: str | None = None) -> HttpResponse:
    """One EST operation on the default CA, or on the CA whose slug the URL names."""
    if not request.is_secure():
        return text(NOT_HTTPS, status=403)
    if operation in UNSUPPORTED:
        return text(UNSUPPORTED[operation], status=501)
    if operation not in HANDLERS:
        return text(
            f"There is no EST operation {operation[:64]!r} here: the operations are cacerts, simpleenroll, "
            "simplereenroll and csrattrs.",
            status=404,
        )
    method, handler = HANDLERS[operation]
    if request.method != method and not (method == "GET" and request.method == "HEAD"):
        response = text(f"{operation} answers {method} only.", status=405)
        response["Allow"] = method
        return response
    authority = _authority(ca)
    if isinstance(authority, HttpResponse):
        return authority
    return handler(request, authority)


def _authority(slug: str | None) -> CertificateAuthority | HttpResponse:
    if slug is None:
        found = CertificateAuthority.objects.filter(is_default=True).select_related("successor").first()
        if found is None:
            return text("This portal has no CA issuing certificates yet; try again later.", status=503)
        return found
    found = CertificateAuthority.objects.filter(slug=slug).first()
    if found is None:
        return text(
            f"There is no CA {slug[:64]!r} here. Use /.well-known/est/ for the default CA.", status=404
        )
    return found.newest_generation()  # a CA rolled over issues through its newest key generation


def cacerts(request: HttpRequest, authority: CertificateAuthority) -> HttpResponse:
    chain = [bytes(node.certificate_der) for node in authority.chain()]
    return base64_answer(est.certs_only(chain), "application/pkcs7-mime")


def csrattrs(request: HttpRequest, authority: CertificateAuthority) -> HttpResponse:
    return base64_answer(est.csr_attributes(), "application/csrattrs")


def _request_der(request: HttpRequest) -> bytes | HttpResponse:
    """The CSR of the body, or the error answer (too large, empty, not base64)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > est.MAX_BODY_BYTES:
        return text(
            f"The request body is {declared} bytes; an EST certificate request is at most "
            f"{est.MAX_BODY_BYTES // 1024} KiB in base64.",
            status=413,
        )
    try:
        return est.decode_body(request.body)
    except est.BodyError as exc:
        return text(str(exc), status=413 if len(request.body) > est.MAX_BODY_BYTES else 400)


def _basic_password(request: HttpRequest) -> str | None:
    """The password of the HTTP Basic credentials (the enrollment code), or None when there are none."""
    header = str(request.META.get("HTTP_AUTHORIZATION", ""))
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip() or len(value) > 1024:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _username, colon, password = decoded.partition(":")
    return password if colon and password else None


def simpleenroll(request: HttpRequest, authority: CertificateAuthority) -> HttpResponse:
    code = _basic_password(request)
    if code is None:
        response = text(NO_CODE, status=401)
        response["WWW-Authenticate"] = REALM
        return response
    der = _request_der(request)
    if isinstance(der, HttpResponse):
        return der
    outcome = flows.enroll_with_code(
        code=code,
        csr_der=der,
        kind=RequestKind.EST,
        client_address=proxies.client_address(request),
        ca=authority,
    )
    return _answer(outcome)


def simplereenroll(request: HttpRequest, authority: CertificateAuthority) -> HttpResponse:
    forwarded = read_forwarded_certificate(request)
    if forwarded is None:
        return text(NO_CERTIFICATE, status=403)
    certificate = (
        Certificate.objects.issued()
        .select_related("ca", "owner")
        .filter(fingerprint_sha256=hashlib.sha256(forwarded.der).hexdigest())
        .first()
    )
    if certificate is None or bytes(certificate.der) != forwarded.der:
        return text(REENROLL_NOT_OURS, status=403)
    der = _request_der(request)
    if isinstance(der, HttpResponse):
        return der
    outcome = flows.reenroll(
        certificate=certificate,
        csr_der=der,
        kind=RequestKind.EST,
        client_address=proxies.client_address(request),
        ca=None if authority.is_default else authority,
    )
    return _answer(outcome)


Handler = Callable[[HttpRequest, CertificateAuthority], HttpResponse]
#: Each operation's method and handler.
HANDLERS: dict[str, tuple[str, Handler]] = {
    "cacerts": ("GET", cacerts),
    "csrattrs": ("GET", csrattrs),
    "simpleenroll": ("POST", simpleenroll),
    "simplereenroll": ("POST", simplereenroll),
}


def _answer(outcome: DeviceOutcome) -> HttpResponse:
    """The EST answer to a flow outcome: the certificate, 202 while pending, or the refusal."""
    if outcome.kind == DeviceOutcomeKind.ISSUED and outcome.certificate is not None:
        return base64_answer(est.certs_only([bytes(outcome.certificate.der)]), PKCS7_CERTS_ONLY)
    if outcome.kind == DeviceOutcomeKind.PENDING:
        response = text(outcome.reason, status=202)
        response["Retry-After"] = str(max(1, outcome.retry_after))
        return response
    status = STATUS.get(outcome.cause, 400)
    response = text(outcome.reason, status=status)
    if status == 401:
        response["WWW-Authenticate"] = REALM
    if outcome.retry_after:
        response["Retry-After"] = str(outcome.retry_after)
    return response
