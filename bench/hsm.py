"""CA key in SoftHSM2 (PKCS#11) beside the same key in a file: signatures per second, bulk approvals per
second (linted) and the CRL republish (one new revocation on top of ``crl_entries``, in a forked child as
the CRL figures are), first with the CA's key file, then after ``move_ca_key`` put the very same key into
a SoftHSM2 token: the same CA, the same data, only the key's home differs.

SoftHSM2 is a software token: its figures show what the PKCS#11 path itself costs (a session call per
signature, the hash in Python for ECDSA), not what a hardware HSM would sign per second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings

from bench.common import Output, certificates, emit, fill_revocations, in_child, timed
from bench.issuance import _submitted
from ca.clock import utcnow
from ca.models import CertificateAuthority, Revocation, RevocationReason
from ca.pki.pkcs11 import SOFTHSM2_MODULE, reinitialize_modules
from ca.pki.signing import Purpose, signature_hash
from ca.services import authorities, keys
from ca.services import crl as ca_crl
from enroll import flows

PIN = "bench-pin-1234"
HSM_LABEL = "enroll-bench"


def softhsm_installed() -> bool:
    """Whether Debian's softhsm2 is here (softhsm2-util and its PKCS#11 module)."""
    return shutil.which("softhsm2-util") is not None and Path(SOFTHSM2_MODULE).exists()


@contextmanager
def _softhsm_token(folder: Path) -> Iterator[Path]:
    """A fresh SoftHSM2 token directory with one token (``SOFTHSM2_CONF`` set for this process and its
    children); the PIN file's path."""
    tokens = folder / "tokens"
    tokens.mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    reinitialize_modules()
    try:
        command = ["softhsm2-util", "--init-token", "--free", "--label", HSM_LABEL, "--pin", PIN]
        subprocess.run([*command, "--so-pin", PIN], check=True, capture_output=True, timeout=60)
        pin_file = folder / "pin"
        pin_file.write_text(PIN + "\n")
        yield pin_file
    finally:
        keys.clear_key_cache()
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before
        reinitialize_modules()


def _figures(
    out: Output, *, ca: CertificateAuthority, store: str, owner: User, admin: User, count: int
) -> dict[str, float]:
    """Signatures per second, bulk approvals per second and the CRL republish for ``ca`` as it is now."""
    backend = keys.key_backend(ca)
    public_key = backend.public_key()
    algorithm = signature_hash(public_key=public_key)
    data = ca.certificate.tbs_certificate_bytes
    signatures = max(count, 200)
    started = time.perf_counter()
    for _ in range(signatures):
        backend.sign(data=data, algorithm=algorithm, purpose=Purpose.CERTIFICATE)
    signing = signatures / (time.perf_counter() - started)
    emit(
        out,
        figure="hsm_sign",
        key_store=store,
        ca_key=ca.key_type,
        signatures=signatures,
        per_second=round(signing, 1),
    )

    request_ids = _submitted(owner, [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)])
    started = time.perf_counter()
    results = flows.approve_many(request_ids=request_ids, actor=admin)
    seconds = time.perf_counter() - started
    issued = sum(result.outcome == flows.ApprovalOutcome.ISSUED for result in results)
    emit(
        out,
        figure="hsm_issue_bulk_approval",
        database=connection.vendor,
        key_store=store,
        ca_key=ca.key_type,
        lint=True,
        requests=count,
        issued=issued,
        per_second=round(count / seconds, 1),
    )

    Revocation.objects.create(
        certificate=certificates(ca, owner, 1, utcnow())[0],
        reason=RevocationReason.KEY_COMPROMISE,
        revoked_at=utcnow(),
    )
    republish, peak = in_child(
        timed(lambda: ca_crl.publish_crl(ca=CertificateAuthority.objects.get(pk=ca.pk)))
    )
    emit(
        out,
        figure="hsm_crl_republish",
        database=connection.vendor,
        key_store=store,
        entries=Revocation.objects.filter(certificate__ca=ca).count(),
        seconds=round(republish, 3),
        peak_rss_mib=round(peak / 1024, 1),
    )
    return {"sign": signing, "issue": count / seconds, "republish": republish}


def bench_hsm(out: Output, *, issue_count: int, crl_entries: int) -> None:
    """The same CA's figures with its key in a file, then in a SoftHSM2 token, and their ratios."""
    if not softhsm_installed():
        emit(out, figure="hsm", skipped="SoftHSM2 is not installed (Debian package softhsm2)")
        return
    owner = User.objects.create_user("bench-hsm-owner", "bench-hsm@example.com")
    admin = User.objects.create_superuser("bench-hsm-admin", "bench-hsm-admin@example.com", "not-used")
    with (
        tempfile.TemporaryDirectory(prefix="enroll-bench-softhsm-") as folder,
        _softhsm_token(Path(folder)) as pin,
    ):
        ca = authorities.create_ca(name="Bench HSM CA", slug="bench-hsm", make_default=True)
        fill_revocations(ca, owner, crl_entries, utcnow())
        ca_crl.publish_crl(ca=ca)  # the CRL the republish carries over
        file = _figures(out, ca=ca, store="file", owner=owner, admin=admin, count=issue_count)

        placement = authorities.TokenPlacement(module_path=SOFTHSM2_MODULE, token=HSM_LABEL, pin=PIN)
        moved = authorities.move_ca_key(ca=ca, token=placement)
        with override_settings(ENROLL_PKCS11_PIN_FILE=str(pin)):
            keys.clear_key_cache()  # as a web worker: the token opened with the configured PIN
            token = _figures(out, ca=moved, store="softhsm2", owner=owner, admin=admin, count=issue_count)
        emit(
            out,
            figure="hsm_beside_file",
            database=connection.vendor,
            ca_key=moved.key_type,
            sign_share_of_file=round(token["sign"] / file["sign"], 3),
            issue_share_of_file=round(token["issue"] / file["issue"], 3),
            republish_seconds_file=round(file["republish"], 3),
            republish_seconds_softhsm2=round(token["republish"], 3),
        )
