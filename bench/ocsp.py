"""The OCSP responder under gunicorn and wrk, beside a trivial view behind the same middleware, for a CA
with many certificates (issue 19: "cheap to answer").

GET requests rotate over a fixed set of serials, half good and half revoked, each with nginx's SHA-1
CertID and URL escaping: what front servers send on their cache misses. The responder signs an answer
once and reuses it for half its lifetime (ENROLL_OCSP_VALIDITY_SECONDS) in each worker, so the rotation
also measures re-signing. One POST figure (one request, the same serial every time). In process: the
microseconds to answer from the reuse cache and to sign afresh (a request with a nonce).
"""

from __future__ import annotations

import base64
import secrets
import tempfile
import time
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from bench.common import Output, certificates, emit, fill_revocations
from bench.endpoint import _get, gunicorn, wrk_rate
from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, Revocation
from ca.services import authorities
from ca.services.ocsp import clear_caches, ocsp_response

#: Certificates of the benchmark's CA (a tenth of them revoked), unless --ocsp-certificates says otherwise.
OCSP_CERTIFICATES = 100_000
#: Serials the GET stream rotates over: half good, half revoked.
OCSP_SERIALS = 100
HTTP_ROUNDS = 3
BATCH = 5000


def cert_id_request(ca: CertificateAuthority, serial: str, *, nonce: bool = False) -> bytes:
    """A DER OCSP request for ``serial`` of ``ca`` with a SHA-1 CertID, as nginx sends it (the rows of
    :func:`bench.common.certificates` have no real DER, so the CertID is built from the CA alone)."""
    issuer = ca.certificate
    name_hash = hashes.Hash(hashes.SHA1())  # noqa: S303 (nginx's CertIDs use SHA-1)
    name_hash.update(issuer.subject.public_bytes())
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest  # SHA-1 of the key bits
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash.finalize(),
        key_hash,
        int(serial, 16),
        hashes.SHA1(),  # noqa: S303
    )
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def get_path(ca: CertificateAuthority, serial: str) -> str:
    """``/pki/ocsp/<base64, URL-escaped as nginx escapes it>``."""
    encoded = base64.b64encode(cert_id_request(ca, serial)).decode()
    return reverse("ca:responder") + "/" + urllib.parse.quote(encoded, safe="")


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{byte}" for byte in data) + '"'


def rotation_script(folder: Path, paths: list[str]) -> Path:
    """A wrk script that GETs ``paths`` in turn (each wrk thread from the start)."""
    listed = ",\n".join(_lua_string(p.encode()) for p in paths)
    script = folder / "rotate.lua"
    script.write_text(
        f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
        'request = function()\n  i = i % #paths + 1\n  return wrk.format("GET", paths[i])\nend\n'
    )
    return script


def post_script(folder: Path, body: bytes) -> Path:
    script = folder / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/ocsp-request"\n'
        f"wrk.body = {_lua_string(body)}\n"
    )
    return script


def make_certificates(ca: CertificateAuthority, owner: User, count: int) -> tuple[list[str], list[str]]:
    """``count`` certificate rows of ``ca``, a tenth revoked; some good and some revoked serials."""
    now = utcnow()
    revoked_count = max(1, count // 10)
    fill_revocations(ca, owner, revoked_count, now)
    for start in range(revoked_count, count, BATCH):
        certificates(ca, owner, min(BATCH, count - start), now)
    half = OCSP_SERIALS // 2
    revoked = list(
        Revocation.objects.filter(certificate__ca=ca).values_list("certificate__serial", flat=True)[:half]
    )
    good = list(
        Certificate.objects.filter(ca=ca, revocation__isnull=True).values_list("serial", flat=True)[:half]
    )
    return good, revoked


def in_process_microseconds(ca: CertificateAuthority, serial: str, count: int = 200) -> dict[str, float]:
    """Microseconds per answer from :func:`ocsp_response`: reused (no nonce) and signed afresh (nonce)."""
    plain = cert_id_request(ca, serial)
    with_nonce = [cert_id_request(ca, serial, nonce=True) for _ in range(count)]
    ocsp_response(request_der=plain)
    started = time.perf_counter()
    for _ in range(count):
        ocsp_response(request_der=plain)
    reused = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for request in with_nonce:
        ocsp_response(request_der=request)
    signed = (time.perf_counter() - started) / count * 1e6
    return {"reused_answer": round(reused, 1), "signed_afresh": round(signed, 1)}


def bench_ocsp(out: Output, *, wrk: str | None, seconds: int, count: int = OCSP_CERTIFICATES) -> None:
    """The responder's figures; nothing under gunicorn without wrk."""
    if wrk is None:
        emit(out, figure="ocsp", skipped="wrk is not installed (apt-get install wrk); no OCSP figures")
        return
    ca = authorities.create_ca(name="Bench OCSP CA", slug="bench-ocsp", make_default=False)
    good, revoked = make_certificates(ca, User.objects.create_user("bench-ocsp-owner"), count)
    paths = [get_path(ca, serial) for pair in zip(good, revoked, strict=False) for serial in pair]
    expected = {get_path(ca, s): "good" for s in good} | {get_path(ca, s): "revoked" for s in revoked}
    in_process = in_process_microseconds(ca, good[0])
    clear_caches()
    connection.close()  # the server's workers use the database from here
    with gunicorn() as port, tempfile.TemporaryDirectory(prefix="enroll-bench-ocsp-") as folder:
        for path in paths:  # every answer is right before anything is timed
            response, body = _get(port, path)
            status = ocsp.load_der_ocsp_response(body).certificate_status.name.lower()
            if response.status != 200 or status != expected[path]:
                raise RuntimeError(
                    f"the responder answered {response.status} {status} for a {expected[path]}"
                )
        base = f"http://127.0.0.1:{port}"
        responder = base + reverse("ca:responder")
        runs: dict[str, tuple[str, list[str]]] = {
            "trivial": (f"{base}/bench/trivial", []),
            "get": (base + "/", ["-s", str(rotation_script(Path(folder), paths))]),
            "post": (responder, ["-s", str(post_script(Path(folder), cert_id_request(ca, good[0])))]),
        }
        for url, extra in runs.values():  # warm-up
            wrk_rate(wrk, url, seconds=1, extra=extra)
        best = dict.fromkeys(runs, 0.0)
        for _round in range(HTTP_ROUNDS):
            for name, (url, extra) in runs.items():
                best[name] = max(best[name], wrk_rate(wrk, url, seconds=seconds, extra=extra))
    trivial = best["trivial"]
    common = {
        "database": connection.vendor,
        "certificates": count,
        "validity_seconds": settings.ENROLL_OCSP_VALIDITY_SECONDS,
        "server": "gunicorn, 2 gthread workers of 4 threads",
        "client": f"wrk -t2 -c8, best of {HTTP_ROUNDS} interleaved {seconds}-second runs",
        "trivial_view_requests_per_second": trivial,
    }
    emit(
        out,
        figure="ocsp_get",
        serials=f"{len(good)} good, {len(revoked)} revoked, SHA-1 CertIDs, rotating",
        requests_per_second=best["get"],
        share_of_trivial=round(best["get"] / trivial, 3),
        **common,
    )
    emit(
        out,
        figure="ocsp_post",
        serials="1 good, the same request every time",
        requests_per_second=best["post"],
        share_of_trivial=round(best["post"] / trivial, 3),
        **common,
    )
    emit(
        out,
        figure="ocsp_in_process_microseconds_per_answer",
        note="ocsp_response() in this process, no HTTP: reused from the answer cache; signed (a nonce)",
        database=connection.vendor,
        **in_process,
    )
