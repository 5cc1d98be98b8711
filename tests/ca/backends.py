"""Key backends for service tests: a spy around the CA's real backend (every sign() noted, optionally
made to fail), put in place of :func:`ca.services.keys.key_backend`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from asn1crypto import x509 as asn1_x509

from ca.models import CertificateAuthority
from ca.pki.signing import CAPublicKey, KeyBackend, Purpose, SignatureHash
from ca.services import keys

#: What a spy does to a call to sign (after noting it): None signs as the real key does.
Fault = Callable[["SpyBackend", bytes, SignatureHash, Purpose], bytes] | None


@dataclass
class SpyBackend:
    """The CA's real backend, with every call to ``sign`` noted as (purpose, data) in ``calls``."""

    inner: KeyBackend
    calls: list[tuple[Purpose, bytes]]
    fault: Fault = None

    def public_key(self) -> CAPublicKey:
        return self.inner.public_key()

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        self.calls.append((purpose, data))
        if self.fault is not None:
            return self.fault(self, data, algorithm, purpose)
        return self.inner.sign(data=data, algorithm=algorithm, purpose=purpose)


@dataclass
class Spy:
    """Every CA signature asked of any CA's backend while the spy is in place."""

    calls: list[tuple[Purpose, bytes]] = field(default_factory=list)
    fault: Fault = None

    def signed(self, purpose: Purpose) -> list[bytes]:
        return [data for p, data in self.calls if p is purpose]

    def certificate_serials(self) -> list[int]:
        """The serials of the certificates whose TBS the CA key was asked to sign, in order."""
        return [
            int(asn1_x509.TbsCertificate.load(data)["serial_number"].native)
            for data in self.signed(Purpose.CERTIFICATE)
        ]


def install_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Route every CA key backend through one :class:`Spy` (for this test only)."""
    spy = Spy()
    real = keys.key_backend

    def spied(ca: CertificateAuthority) -> KeyBackend:
        return SpyBackend(real(ca), spy.calls, fault=lambda b, d, a, p: _fault(spy, b, d, a, p))

    monkeypatch.setattr(keys, "key_backend", spied)
    return spy


def _fault(spy: Spy, backend: SpyBackend, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
    if spy.fault is not None:
        return spy.fault(backend, data, algorithm, purpose)
    return backend.inner.sign(data=data, algorithm=algorithm, purpose=purpose)
