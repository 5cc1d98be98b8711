"""CA keys and SoftHSM2: a rollover whose new key is generated in a PKCS#11 token (the options of init_ca),
and the audit entry of a key moved into a token."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from django.contrib.auth.models import User
from django.core.management import call_command
from pytest_django.fixtures import Settings

from ca.models import AuditEntry, AuditEvent, Certificate, CertificateAuthority, CrlPublication
from ca.pki import pkcs11 as pki_pkcs11
from ca.services import keys
from tests.harness.softhsm import SoftHsm, softhsm
from tests.helpers import signed_by

pytestmark = [pytest.mark.real_client, pytest.mark.django_db]


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    with softhsm(tmp_path_factory.mktemp("softhsm")) as made:
        yield made


def test_a_file_key_ca_rolls_over_to_a_key_generated_in_the_token(
    ca: CertificateAuthority,
    hsm: SoftHsm,
    alice: User,
    issue_for: Callable[..., Certificate],
    settings: Settings,
) -> None:
    token = hsm.token()
    out = io.StringIO()
    call_command("rollover_ca", "test-root", stdout=out, **hsm.options(token))
    assert "key in a PKCS#11 token" in out.getvalue()
    new = CertificateAuthority.objects.get(slug=out.getvalue().splitlines()[-1])
    assert new.key_in_token
    assert not CertificateAuthority.objects.get(pk=ca.pk).key_in_token  # the old key stays where it was
    old_signs_new, new_signs_old = new.link_certificates
    old_signs_new.verify_directly_issued_by(ca.certificate)
    new_signs_old.verify_directly_issued_by(new.certificate)  # signed inside the token

    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file())
    keys.clear_key_cache()  # as a web worker: the token opened with the configured PIN
    assert isinstance(keys.key_backend(new), pki_pkcs11.Pkcs11KeyBackend)
    issued = issue_for(alice)
    assert issued.ca == new
    issued.x509.verify_directly_issued_by(new.certificate)
    crl = CrlPublication.objects.filter(ca=new).latest()
    assert signed_by(x509.load_der_x509_crl(bytes(crl.der)), new.certificate)


def test_moving_a_key_into_a_token_is_audited(ca: CertificateAuthority, hsm: SoftHsm) -> None:
    token = hsm.token()
    call_command("move_ca_key", "test-root", **hsm.options(token))
    entry = AuditEntry.objects.get(event=AuditEvent.CA_KEY_MOVED)
    assert entry.ca_slug == "test-root"
    assert entry.serial == ca.serial
    assert f"into PKCS#11 token {token}" in entry.detail
