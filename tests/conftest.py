"""Shared fixtures: a CA, alice, bob, an administrator, CSR helpers and real-program lookup."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import hypothesis
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from django.contrib.auth.models import User
from django.core.cache import caches

from accounts.services import mark_email_verified
from ca.models import Certificate, CertificateAuthority
from ca.services.authorities import create_ca
from enroll import flows

FIXTURES = Path(__file__).parent / "fixtures"

# Property-based tests (tests/properties/test_parser_properties.py): the same examples on every run
# (derandomized, no example database), so CI is deterministic. ENROLL_HYPOTHESIS_PROFILE=fuzz runs many
# random examples.
hypothesis.settings.register_profile(
    "enroll",
    derandomize=True,
    database=None,
    max_examples=100,
    deadline=dt.timedelta(seconds=2),
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.register_profile(
    "fuzz", parent=hypothesis.settings.get_profile("enroll"), derandomize=False, max_examples=5000
)
hypothesis.settings.load_profile(os.environ.get("ENROLL_HYPOTHESIS_PROFILE", "enroll"))

#: Set in CI: a real-client test whose program is missing fails instead of being skipped.
REQUIRE_REAL_CLIENTS = os.environ.get("ENROLL_REQUIRE_REAL_CLIENTS", "") == "1"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


#: Where Debian puts programs that a non-root PATH may lack (nginx and apache2 live in /usr/sbin).
_SYSTEM_DIRS = os.pathsep.join(
    ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")
)


def need_program(*names: str) -> str:
    """Path of a real program the test needs (the first of ``names`` found: on PATH, in the system
    folders, in this virtualenv); skip when it is missing, or fail with ENROLL_REQUIRE_REAL_CLIENTS=1 (CI)."""
    venv_bin = str(Path(sys.executable).parent)
    for name in names:
        for path in (None, _SYSTEM_DIRS, venv_bin):
            found = shutil.which(name, path=path)
            if found is not None:
                return found
    message = f"{' or '.join(names)} is not installed"
    if REQUIRE_REAL_CLIENTS:
        pytest.fail(f"{message} (ENROLL_REQUIRE_REAL_CLIENTS=1)")
    pytest.skip(message)


def signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """Whether ``crl`` verifies with the public key of ``issuer`` (an EC or RSA CA here)."""
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return crl.is_signature_valid(key)


def make_csr(
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    common_name: str = "whatever-the-csr-says",
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> bytes:
    """A CSR made with `cryptography` (EC P-256 key unless one is given)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    for extension, critical in extensions or []:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(encoding)


@pytest.fixture(autouse=True)
def _fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """Every test starts with no rate-limit counters. They live in a database cache table, which plain
    database tests roll back but tests with live servers (transactional) do not."""
    if {"transactional_db", "live_server"} & set(request.fixturenames):
        request.getfixturevalue("transactional_db")
        caches["ratelimit"].clear()


@pytest.fixture
def ca(db: None) -> CertificateAuthority:
    """A root CA (EC P-256) that issues client certificates."""
    return create_ca(name="Test Root CA", slug="test-root", make_default=True)


@pytest.fixture
def alice(db: None) -> User:
    user = User.objects.create_user("alice", "alice@example.com", "alice-password-123")
    mark_email_verified(user)
    return user


@pytest.fixture
def bob(db: None) -> User:
    user = User.objects.create_user("bob", "bob@example.com", "bob-password-123")
    mark_email_verified(user)
    return user


@pytest.fixture
def admin_user(db: None) -> User:
    return User.objects.create_superuser("admin", "admin@example.com", "admin-password-123")


@pytest.fixture
def issue_for() -> Callable[..., Certificate]:
    """Submit and approve a CSR for a user; return the certificate."""

    def issue(user: User, csr: bytes | None = None) -> Certificate:
        request = flows.submit_csr(owner=user, data=csr or make_csr())
        approved = flows.approve(request_id=request.pk)
        assert approved.certificate is not None, approved.reason
        return approved.certificate

    return issue
