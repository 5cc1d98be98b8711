"""A signer serving on a socket in tmp_path from a thread of the test process, and a certificate drafted the
way issuance drafts one (reserved serial, authorisation, the client profile), to sign through it."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User

from ca.clock import utcnow
from ca.models import CertificateAuthority, SerialReservation
from ca.pki import keypolicy, signing
from ca.pki.profiles import SubjectInfo, client_certificate_builder, get_profile, validity_window
from ca.services import authorisations, reservations
from ca.signer import client
from ca.signer.server import Signer


@pytest.fixture
def signer(tmp_path: Path, transactional_db: None) -> Iterator[Signer]:
    """A signer on ``tmp_path/signer.sock`` serving this process's uid."""
    server = Signer(path=str(tmp_path / "signer.sock"))
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    client.close()
    server.stop()
    thread.join(timeout=30)


@dataclass(frozen=True)
class Draft:
    """What to ask the signer to sign: a certificate for ``key`` on ``ca`` with ``reservation``'s serial."""

    ca: CertificateAuthority
    key: ec.EllipticCurvePrivateKey
    reservation: SerialReservation
    owner: User
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: x509.Certificate

    def builder(self) -> x509.CertificateBuilder:
        return client_certificate_builder(
            profile=get_profile(name="client"),
            public_key=self.key.public_key(),
            subject=SubjectInfo(common_name=self.owner.username, email=self.owner.email),
            issuer=self.issuer,
            serial=int(self.reservation.serial, 16),
            not_before=self.not_before,
            not_after=self.not_after,
            urls=self.ca.urls,
        )

    def sign(self, path: str) -> x509.Certificate:
        backend = client.SignerBackend(ca=self.ca, path=path)
        return signing.sign_certificate(builder=self.builder(), backend=backend)

    def but(self, **changes: object) -> Draft:
        return replace(self, **changes)  # type: ignore[arg-type]


def draft(ca: CertificateAuthority, owner: User, *, approver: User | None, authorise: bool = True) -> Draft:
    """Reserve a serial on ``ca`` for a new key of ``owner`` and (unless told not to) authorise it."""
    now = utcnow()
    not_before, not_after = validity_window(now=now, validity=dt.timedelta(days=365), issuer=ca.certificate)
    key = ec.generate_private_key(ec.SECP256R1())
    approved = authorisations.Approved("ab" * 32, keypolicy.spki_sha256(key.public_key()), owner.pk)
    approval = authorisations.Approval(approver, [approved])

    def write(rows: list[SerialReservation]) -> None:
        authorisations.write(ca=ca, approval=approval, reservations=rows, now=now)

    (reservation,) = reservations.reserve(
        ca=ca, purposes=["signer test"], not_after=not_after, now=now, then=write if authorise else None
    )
    return Draft(ca, key, reservation, owner, not_before, not_after, ca.certificate)
