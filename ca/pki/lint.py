"""Lint a certificate before it leaves the CA: pkilint's RFC 5280 (PKIX) certificate validators.

The CA drafts a certificate with a throwaway key (:func:`ca.pki.signing.draft_certificate`: the final
to-be-signed bytes, not the CA's signature), lints that draft's DER here, and has the CA key sign it only
when no finding is an ERROR (a violated MUST of RFC 5280) or FATAL (the DER cannot even be decoded): a
bad profile, subject or URL then stops issuance before the CA key signs anything. (Only the signature
value differs between the draft and the certificate; the validators read the TBS and the algorithm.)

The validators are the ones pkilint's ``lint_pkix_cert`` runs (issuer, validity, subject, extensions and
SubjectPublicKeyInfo per RFC 5280 section 4.1 and 4.2). They are built once per process and reused: the
validator objects keep no state between documents.

pkilint checks URIs (RFC 3986 as RFC 5280 section 4.2.1.6 asks) with a domain-name rule that refuses a
single-label host such as ``localhost``: :func:`uri_problem` tells the same ahead of time, for the
operator's configured base URL.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import validators  # type: ignore[import-untyped]  # pkilint's own URL rule
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import profiles
from .serials import new_serial

#: pkilint and its ASN.1 modules take about half a second to import: they are imported on the first lint,
#: so a process that lints nothing (most manage.py commands) starts without them.
_PKILINT_MODULES = (
    "pkilint.loader",
    "pkilint.pkix.certificate",
    "pkilint.pkix.extension",
    "pkilint.pkix.name",
)


class Severity(enum.IntEnum):
    """pkilint's severities, most severe first (FATAL and ERROR refuse the certificate)."""

    FATAL = 0
    ERROR = 1
    WARNING = 2
    NOTICE = 3
    INFO = 4
    DEBUG = 5


#: Findings of these severities refuse a certificate.
BLOCKING = frozenset({Severity.FATAL, Severity.ERROR})


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding: its severity, pkilint's code (e.g. ``pkix.invalid_uri_syntax``), where, and why."""

    severity: Severity
    code: str
    path: str
    message: str = ""

    @property
    def blocking(self) -> bool:
        return self.severity in BLOCKING

    def __str__(self) -> str:
        text = f"{self.code} ({self.severity.name}) at {self.path}"
        return f"{text}: {self.message}" if self.message else text


class CertificateLintError(ValueError):
    """The certificate has ERROR or FATAL findings; the message lists them."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        listed = "; ".join(str(f) for f in findings)
        super().__init__(f"The certificate violates RFC 5280 and was not issued: {listed}.")


@functools.cache
def _validator() -> Any:
    """The PKIX certificate validator container, built on first use (as ``lint_pkix_cert`` builds it)."""
    from pkilint.pkix import certificate as pkix_certificate
    from pkilint.pkix import extension, name

    decoding = pkix_certificate.create_decoding_validators(
        name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
    )
    return pkix_certificate.create_pkix_certificate_validator_container(
        decoding,
        [
            pkix_certificate.create_issuer_validator_container([]),
            pkix_certificate.create_validity_validator_container(),
            pkix_certificate.create_subject_validator_container([]),
            pkix_certificate.create_extensions_validator_container([]),
            pkix_certificate.create_spki_validator_container([]),
        ],
    )


@functools.cache
def _loader() -> Any:
    from pkilint import loader

    return loader.RFC5280CertificateDocumentLoader()


def warm_up() -> None:
    """Import pkilint and build the validators now (a tenth to half a second), not on the first lint.

    For long-running processes that lint, at start: a web server's workers (``enroll/wsgi.py``; with
    gunicorn's ``--preload`` once in its master, before it forks the workers), so that no request waits.
    One throwaway certificate is linted too, with the URIs and e-mail address a client certificate carries:
    that compiles the patterns of pkilint's URI and address rules, which its first lint would otherwise do.
    """
    lint_certificate(der=_sample_der())


#: The warm-up certificates' validity, fixed: no clock is read (the validators do not compare it with now).
_SAMPLE_VALIDITY = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))


def _sample_der() -> bytes:
    """A client certificate as the portal issues it (:func:`ca.pki.profiles.client_certificate_builder`,
    the ``client`` profile with an e-mail address, CRL distribution point, caIssuers and OCSP URLs) under a
    throwaway root CA (:func:`ca.pki.profiles.build_ca_certificate`), both keys throwaway P-256 ones;
    it lints clean. Only for :func:`warm_up`."""
    not_before, not_after = _SAMPLE_VALIDITY
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = profiles.build_ca_certificate(
        subject=profiles.build_ca_name(common_name="Lint warm-up CA", organization=None),
        key=root_key,
        serial=new_serial(),
        not_before=not_before,
        not_after=not_after,
    )
    url = "https://ca.example.com/warm-up"
    builder = profiles.client_certificate_builder(
        profile=profiles.get_profile(name="client"),
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        subject=profiles.SubjectInfo(common_name="lint warm-up", email="warm-up@example.com"),
        issuer=root,
        serial=new_serial(),
        not_before=not_before,
        not_after=not_after,
        urls=profiles.IssuerUrls(crl_url=f"{url}/crl", ca_issuers_url=f"{url}/ca", ocsp_url=f"{url}/ocsp"),
    )
    return builder.sign(root_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def lint_certificate(*, der: bytes) -> list[Finding]:
    """Every finding pkilint's RFC 5280 certificate validators report for ``der``, most severe first.

    DER that does not decode as a certificate gives one FATAL finding.
    """
    from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]

    validator = _validator()
    try:
        document = _loader().load_der_document(der, "certificate")
    except (ValueError, PyAsn1Error) as exc:
        return [Finding(Severity.FATAL, "itu.invalid_asn1_syntax", "certificate", str(exc))]
    findings = [
        Finding(
            Severity[description.finding.severity.name],
            str(description.finding.code),
            str(result.node.path),
            str(description.message or ""),
        )
        for result in validator.validate(document.root)
        for description in result.finding_descriptions
    ]
    return sorted(findings, key=lambda f: f.severity)


def _lint_der(der: bytes) -> list[Finding]:
    """:func:`lint_certificate` for a worker process (positional, picklable)."""
    return lint_certificate(der=der)


#: From this many certificates on, :func:`lint_many` lints in worker processes (one per CPU).
PARALLEL_FROM = 64


def _worker_count() -> int:
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)


def lint_many(*, ders: Sequence[bytes], parallel_from: int | None = None) -> list[list[Finding]]:
    """:func:`lint_certificate` for each of ``ders``, in order.

    pkilint is pure Python (a few milliseconds per certificate), so a large batch is linted in worker
    processes, one per CPU: they come from a ``forkserver`` (a clean single-threaded process that has
    imported this module), never forked from the caller, which may hold threads and database connections.
    As with any ``multiprocessing`` start method but fork, a worker imports the caller's main script
    (``manage.py``, ``gunicorn``): a script of one's own that issues in bulk needs the usual
    ``if __name__ == "__main__":`` guard.
    Batches smaller than ``parallel_from`` (default :data:`PARALLEL_FROM`), and machines with one CPU,
    lint in this process.
    """
    workers = _worker_count()
    if len(ders) < (PARALLEL_FROM if parallel_from is None else parallel_from) or workers < 2:
        return [lint_certificate(der=der) for der in ders]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, *_PKILINT_MODULES])
    chunk = max(1, len(ders) // (workers * 4))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_lint_der, ders, chunksize=chunk))


def blocking_error(findings: list[Finding]) -> CertificateLintError | None:
    """The error that refuses a certificate with these findings (ERROR or FATAL ones), or None."""
    blocking = [f for f in findings if f.blocking]
    return CertificateLintError(blocking) if blocking else None


def check_certificate(*, der: bytes) -> list[Finding]:
    """Raise :class:`CertificateLintError` listing the ERROR and FATAL findings; else return the rest."""
    findings = lint_certificate(der=der)
    if (error := blocking_error(findings)) is not None:
        raise error
    return findings


def uri_problem(uri: str) -> str | None:
    """Why pkilint would refuse ``uri`` in a certificate (CRL distribution point, AIA), or None.

    Uses the URL rule pkilint applies (the ``validators`` package), and names the usual cause: a host
    without a dot, such as ``localhost``.
    """
    if validators.url(uri) is True:
        return None
    try:
        hostname = urlsplit(uri).hostname or ""
    except ValueError:
        hostname = ""
    if hostname and "." not in hostname and ":" not in hostname:
        return f"its host '{hostname}' is a single label (no dot), which RFC 5280 linters refuse in URIs"
    return "it is not a valid URI by RFC 3986, as RFC 5280 linters check it"
