"""SCEP through a real ``manage.py signer`` process: a web worker with the signer's socket and neither the key
folder nor the passphrase enrolls a device over SCEP (decrypting its request and signing the CertRep with
the RA key, both in the signer), and cannot open the RA key itself. The RA of the RSA CA was made by
``manage.py scep_ra`` in the signer's environment, as the operator runs it as the signer's user."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.cli import ManagePy
from tests.signer.test_web_worker import start_signer, web_worker

#: What the web worker runs (``manage.py shell -c``): what the SCEP view does, step by step.
WORKER = """
import os
from django.contrib.auth.models import User
from accounts.services import mark_email_verified
from ca.errors import CAError
from ca.models import ScepRaCertificate
from ca.pki import scep
from ca.services import authorities, keys
from ca.services import scep as scep_service
from enroll import flows
from enroll.models import RequestKind
from tests.enroll.test_scep import NOW, csr, new_device
assert not [name for name in os.environ if "PIN" in name or "PASSPHRASE" in name]
ca = authorities.default_ca()
ra = ScepRaCertificate.objects.get(ca=ca)
try:
    scep_service.ra_private_key(ra)
    opened = "opened the RA key"
except CAError:
    opened = "no RA key"
owner = User.objects.create_user("alice", "alice@example.com")
mark_email_verified(owner)
admin = User.objects.create_superuser("admin", "admin@example.com", "not-used")
_row, code = flows.create_enrollment_code(owner=owner, created_by=admin, device_name="router")
identity = scep_service.identity_for(ca=ca)
device = new_device()
data = scep.request_message(
    message_type=scep.MessageType.PKCS_REQ, content=csr(device.key, code),
    transaction_id=device.transaction_id, sender_nonce=os.urandom(16),
    signer_certificate_der=device.signer_der, signer_key=device.key,
    recipient_certificate_der=identity.certificate_der, cipher=scep.ContentCipher.AES256,
    digest_algorithm="sha256", now=NOW,
)
message, identity = scep_service.open_message(identity=identity, data=data)
outcome = flows.enroll_with_code(
    code=message.challenge_password, csr_der=message.csr_der, kind=RequestKind.SCEP,
    client_address="192.0.2.1", transaction_id=message.header.transaction_id, single_use_only=True,
)
body = scep_service.reply(
    identity=identity, header=message.header, status=scep.PkiStatus.SUCCESS, certificate=outcome.certificate
)
answer = scep.read_cert_rep(data=body, requester_key=device.key, requester_certificate_der=device.signer_der)
cached = len(keys._key_cache) + len(scep_service._ra_key_cache)
print(type(identity.key).__name__, "|", opened, "|", answer.status.name, "|", cached)
"""


def test_a_web_worker_enrolls_over_scep_through_the_signer_and_cannot_open_the_ra_key(tmp_path: Path) -> None:
    socket_path = tmp_path / "run" / "signer.sock"
    socket_path.parent.mkdir()
    signer = ManagePy(tmp_path)
    signer.ok("migrate", "--noinput")
    signer.ok("init_ca", "--name", "SCEP Signer CA", "--key-type", "rsa-3072")
    operator = ManagePy(tmp_path)  # the signer's user, with the portal's configuration (the socket set)
    operator.env.update(ENROLL_SIGNER_SOCKET=str(socket_path))
    fingerprint = operator.ok("scep_ra")

    web = web_worker(tmp_path, socket_path)
    process = start_signer(signer, socket_path)
    try:
        kind, opened, status, cached = (part.strip() for part in web.ok("shell", "-c", WORKER).split("|"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert kind == "SignerRaKey"  # the RA, even for an RSA key-file CA, and its key in the signer
    assert opened == "no RA key"
    assert status == "SUCCESS"
    assert cached == "0"  # the worker decrypted no key, the CA's nor the RA's
    assert len(fingerprint) == 64
