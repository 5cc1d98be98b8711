"""A web worker configured with the signer's socket signs only through a real ``manage.py signer`` process.

A fresh installation on a file database: the signer's environment has the key folder and the passphrase;
the web worker's has neither (another data folder, no passphrase, no PIN), only ``ENROLL_SIGNER_SOCKET``.
The worker approves a request and publishes a CRL through the signer, and its own key cache stays empty.
With the signer stopped, the worker's approval says the signer is not running and the request is left as
it was. (The test machine cannot create system users, so "cannot read the key" is shown by configuration.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli import ROOT, ManagePy

#: What the web worker runs (``manage.py shell -c``): facts about its own environment, then an approval.
WORKER = """
import os
from django.conf import settings
from django.contrib.auth.models import User
from ca.services import authorities, crl, keys
from enroll import flows
from tests.helpers import make_csr
assert not settings.ENROLL_CA_PASSPHRASE and "ENROLL_CA_PASSPHRASE" not in os.environ
assert not [name for name in os.environ if "PIN" in name or "PASSPHRASE" in name]
assert not any(settings.ENROLL_CA_KEY_DIR.glob("*")) if settings.ENROLL_CA_KEY_DIR.exists() else True
owner = User.objects.get_or_create(username="alice", defaults={"email": "alice@example.com"})[0]
admin = User.objects.get_or_create(username="admin", is_superuser=True, is_staff=True)[0]
request = flows.submit_csr(owner=owner, data=make_csr())
try:
    decided = flows.approve(request_id=request.pk, by=admin)
    outcome = f"{decided.status} {decided.certificate.serial if decided.certificate else decided.reason}"
    crl_number = crl.publish_crl(ca=authorities.default_ca()).number
except flows.FlowError as exc:
    request.refresh_from_db()
    outcome, crl_number = f"refused {request.status}: {exc}", 0
print(outcome, "|", crl_number, "|", len(keys._key_cache))
"""


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the signer did not start"
        time.sleep(0.1)


def web_worker(tmp_path: Path, socket_path: Path) -> ManagePy:
    """A web worker's environment: the same database, the signer's socket, nothing of any key (no
    passphrase, no PIN, another data folder)."""
    web = ManagePy(tmp_path)
    for name in ("ENROLL_CA_PASSPHRASE", "ENROLL_PKCS11_PIN", "ENROLL_PKCS11_PIN_FILE"):
        web.env.pop(name, None)
    web.env.update(ENROLL_DATA_DIR=str(tmp_path / "web-data"), ENROLL_SIGNER_SOCKET=str(socket_path))
    return web


def start_signer(signer: ManagePy, socket_path: Path) -> subprocess.Popen[str]:
    """``manage.py signer`` in ``signer``'s environment, listening once it returns."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "signer", "--socket", str(socket_path)],
        cwd=ROOT,
        env=signer.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(socket_path, process)
    return process


def test_a_web_worker_signs_only_through_the_signer_and_a_stopped_signer_changes_nothing(
    tmp_path: Path,
) -> None:
    socket_path = tmp_path / "run" / "signer.sock"
    socket_path.parent.mkdir()
    # The signer's environment: the key folder and the passphrase. Its socket comes as --socket, so the
    # operator's CA commands in this environment (init_ca) sign in process, as the signer does.
    signer = ManagePy(tmp_path)
    signer.ok("migrate", "--noinput")
    signer.ok("init_ca", "--name", "Signer Test CA")

    web = web_worker(tmp_path, socket_path)
    process = start_signer(signer, socket_path)
    try:
        assert oct(socket_path.stat().st_mode & 0o777) == "0o660"
        status, crl_number, cached = (part.strip() for part in web.ok("shell", "-c", WORKER).split("|"))
        assert status.startswith("issued "), status
        assert int(crl_number) > 0
        assert cached == "0"  # the worker never loaded a key
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not socket_path.exists()  # removed on the way out

    stopped = web.ok("shell", "-c", WORKER)
    assert stopped.startswith("refused submitted: The signer is not running"), stopped
    serial = status.split()[1]
    signed = signer.ok("shell", "-c", AUDITED.replace("SERIAL", serial))
    assert signed == "1 1"


#: The signer's own audit entry for the certificate, and the authorisation it used.
AUDITED = """
from ca.models import AuditEntry, IssuanceAuthorisation
entries = AuditEntry.objects.filter(event="signer_signed", serial="SERIAL").count()
used = IssuanceAuthorisation.objects.filter(serial="SERIAL", used_at__isnull=False).count()
print(entries, used)
"""
