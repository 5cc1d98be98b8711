"""SCEP (RFC 8894) for managed devices: ``/scep`` (default CA) and ``/scep/<ca>``, GET and POST.

Thin over :mod:`ca.services.scep` (keys, RA, CMS) and :mod:`enroll.flows.devices` (the same flow as EST
and the portal's pages). Operations (RFC 8894 section 4), named by the ``operation`` parameter:

- ``GetCACaps``: what the server can do, one keyword a line;
- ``GetCACert``: the CA certificate (application/x-x509-ca-cert), or the RA and CA certificates as a
  certs-only PKCS #7 (application/x-x509-ca-ra-cert) when an RA decrypts for an EC CA;
- ``PKIOperation``: a pkiMessage, as the POST body or base64 in the ``message`` parameter of a GET
  (certmonger sends GETs of about 5.5 KB: see the request-line limit in docs/OPERATIONS.md):
  PKCSReq (challengePassword = the enrollment code; a repeat with the same transactionID is a poll),
  RenewalReq (signed with the device's current certificate), CertPoll (GetCertInitial).

Plain HTTP is normal for SCEP: the CMS envelope protects the request. Every reply to a message whose
signed attributes could be read is a signed CertRep (SUCCESS, PENDING, or FAILURE with failInfo and the
reason as failInfoText); what is not a pkiMessage at all gets HTTP 400 (413 when oversized) with a
plain-text reason.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import proxies
from ca.errors import CAError
from ca.models import CertificateAuthority
from ca.pki import scep
from ca.pki.errors import CAKeyError
from ca.services import scep as scep_service
from enroll import flows
from enroll.flows import DeviceOutcome, DeviceOutcomeKind, RefusalCause
from enroll.flows.devices import REENROLL_NOT_OURS
from enroll.models import RequestKind

logger = logging.getLogger(__name__)

NO_CHALLENGE = (
    "The request carries no challengePassword: put the enrollment code there (scepclient -challenge CODE). "
    "Get a code on the portal's Enroll a device page."
)
NO_SUCH_TRANSACTION = (
    "There is no SCEP request with this transactionID here; send the PKCSReq (with the enrollment code) "
    "first."
)
NOT_OFFERED = "Only PKCSReq, RenewalReq and CertPoll are answered here; GetCert and GetCRL are not offered."
UNAVAILABLE = "The CA cannot answer SCEP requests at the moment; try again in a few minutes."


def text(reason: str, *, status: int) -> HttpResponse:
    return HttpResponse(reason.rstrip() + "\n", status=status, content_type="text/plain; charset=utf-8")


def _authority(slug: str | None) -> CertificateAuthority | HttpResponse:
    if slug is None:
        found = CertificateAuthority.objects.filter(is_default=True).select_related("successor").first()
        if found is None:
            return text("This portal has no CA issuing certificates yet; try again later.", status=503)
        return found
    found = CertificateAuthority.objects.filter(slug=slug).first()
    if found is None:
        return text(f"There is no CA {slug[:64]!r} here. Use /scep for the default CA.", status=404)
    return found.newest_generation()  # a CA rolled over issues through its newest key generation


@csrf_exempt
def scep_operation(request: HttpRequest, ca: str | None = None) -> HttpResponse:
    """One SCEP operation on the default CA, or on the CA whose slug the URL names."""
    if request.method not in ("GET", "POST"):
        response = text("SCEP answers GET and POST.", status=405)
        response["Allow"] = "GET, POST"
        return response
    operation = request.GET.get("operation", "")
    authority = _authority(ca)
    if isinstance(authority, HttpResponse):
        return authority
    try:
        if operation == "GetCACaps":
            return HttpResponse(scep_service.capabilities(), content_type="text/plain")
        if operation == "GetCACert":
            body, content_type = scep_service.ca_certificates(ca=authority)
            return HttpResponse(body, content_type=content_type)
        if operation == "PKIOperation":
            return _pki_operation(request, authority)
    except (CAError, CAKeyError):
        logger.exception("SCEP on CA %s: the CA key or its RA cannot be used", authority.slug)
        return text(UNAVAILABLE, status=503)
    return text(
        f"There is no SCEP operation {operation[:64]!r} here: the operations are GetCACaps, GetCACert and "
        "PKIOperation (RFC 8894).",
        status=400,
    )


def _message_bytes(request: HttpRequest) -> bytes | HttpResponse:
    """The pkiMessage: the POST body, or the GET's base64 ``message`` parameter."""
    too_large = text(
        f"The SCEP message is larger than {scep.MAX_MESSAGE_BYTES // 1024} KiB; "
        "no SCEP request is that large.",
        status=413,
    )
    try:
        if request.method == "POST":
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > scep.MAX_MESSAGE_BYTES:
                return too_large
            data = request.body
        else:
            data = scep.decode_get_message(message=request.GET.get("message", ""))
        scep.check_size(data=data)
    except scep.ScepError as exc:
        return too_large if "larger" in exc.reason else text(exc.reason, status=400)
    return data


def _pki_operation(request: HttpRequest, authority: CertificateAuthority) -> HttpResponse:
    data = _message_bytes(request)
    if isinstance(data, HttpResponse):
        return data
    identity = scep_service.identity_for(ca=authority)
    try:
        message, identity = scep_service.open_message(identity=identity, data=data)
    except scep.ScepError as exc:
        if exc.header is None:
            return text(exc.reason, status=400)
        return _failure(identity, exc.header, exc.fail_info, exc.reason)
    header = message.header
    address = proxies.client_address(request)
    explicit = None if authority.is_default else authority
    outcome: DeviceOutcome | None
    if message.message_type == scep.MessageType.PKCS_REQ:
        if not message.challenge_password:
            return _failure(identity, header, scep.FailInfo.BAD_REQUEST, NO_CHALLENGE)
        outcome = flows.enroll_with_code(
            code=message.challenge_password,
            csr_der=message.csr_der,
            kind=RequestKind.SCEP,
            client_address=address,
            transaction_id=header.transaction_id,
            single_use_only=True,
            ca=authority,
        )
    elif message.message_type == scep.MessageType.RENEWAL_REQ:
        current = scep_service.renewal_certificate(message=message)
        if current is None:
            return _failure(identity, header, scep.FailInfo.BAD_CERT_ID, REENROLL_NOT_OURS)
        outcome = flows.reenroll(
            certificate=current,
            csr_der=message.csr_der,
            kind=RequestKind.SCEP,
            client_address=address,
            transaction_id=header.transaction_id,
            ca=explicit,
        )
    elif message.message_type == scep.MessageType.CERT_POLL:
        outcome = flows.find_device_request(transaction_id=header.transaction_id, kind=RequestKind.SCEP)
        if outcome is None or not _polled_by_requester(outcome, message):
            return _failure(identity, header, scep.FailInfo.BAD_CERT_ID, NO_SUCH_TRANSACTION)
    else:
        return _failure(identity, header, scep.FailInfo.BAD_REQUEST, NOT_OFFERED)
    return _answer(identity, header, outcome, message.message_type)


def _polled_by_requester(outcome: DeviceOutcome, message: scep.PkiMessage) -> bool:
    """RFC 8894 section 3.3.3: a CertPoll is signed with the key of the request it asks about (or, for a
    renewal, the certificate renewed); anyone else is told there is no such transaction."""
    request = outcome.request
    if request is None:
        return False
    signer = scep_service.signer_key_sha256(message=message)
    renewed = request.renewal_of.spki_sha256 if request.renewal_of is not None else None
    return signer in (request.spki_sha256, renewed)


def _pki_response(body: bytes) -> HttpResponse:
    return HttpResponse(body, content_type=scep_service.PKI_MESSAGE)


def _failure(
    identity: scep_service.ScepIdentity, header: scep.MessageHeader, fail_info: scep.FailInfo, reason: str
) -> HttpResponse:
    return _pki_response(
        scep_service.reply(
            identity=identity,
            header=header,
            status=scep.PkiStatus.FAILURE,
            fail_info=fail_info,
            fail_text=reason,
        )
    )


def _answer(
    identity: scep_service.ScepIdentity,
    header: scep.MessageHeader,
    outcome: DeviceOutcome,
    message_type: scep.MessageType,
) -> HttpResponse:
    """The CertRep for a flow outcome: SUCCESS with the certificate, PENDING, or FAILURE with the reason."""
    logger.info(
        "SCEP %s, transactionID %s: %s%s",
        message_type.name,
        header.transaction_id,
        outcome.kind,
        f" ({outcome.reason})" if outcome.kind == DeviceOutcomeKind.REFUSED else "",
    )
    if outcome.kind == DeviceOutcomeKind.ISSUED and outcome.certificate is not None:
        try:
            body = scep_service.reply(
                identity=identity,
                header=header,
                status=scep.PkiStatus.SUCCESS,
                certificate=outcome.certificate,
            )
        except scep.ScepError as exc:
            return _failure(identity, header, exc.fail_info, exc.reason)
        return _pki_response(body)
    if outcome.kind == DeviceOutcomeKind.PENDING:
        return _pki_response(
            scep_service.reply(identity=identity, header=header, status=scep.PkiStatus.PENDING)
        )
    if outcome.cause == RefusalCause.UNAVAILABLE:
        return text(outcome.reason or UNAVAILABLE, status=503)
    return _failure(identity, header, scep.FailInfo.BAD_REQUEST, outcome.reason)
