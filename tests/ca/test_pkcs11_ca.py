"""CA keys in a PKCS#11 token (SoftHSM2): a CA made in the token issues (one and in bulk), revokes, publishes
CRLs and answers OCSP, all of which verify with openssl and pass pkilint; its key cannot be read out; a
file-key CA moves into a token; import_ca points at a key already there; every failure is one plain line
and a non-zero exit; a token that went away leaves the request as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from pytest_django import DjangoCaptureOnCommitCallbacks
from pytest_django.fixtures import Settings

from ca.clock import utcnow
from ca.models import Certificate, CertificateAuthority, RevocationReason
from ca.pki import lint
from ca.pki import pkcs11 as pki_pkcs11
from ca.pki.errors import CAKeyError
from ca.pki.keys import CAKeyType
from ca.pki.lint import Severity
from ca.pki.profiles import build_ca_name, ca_certificate_builder
from ca.pki.serials import new_serial
from ca.pki.signing import Purpose, sign_certificate
from ca.services import keys, scep
from ca.services.crl import current_crl
from ca.services.ocsp import ocsp_response
from ca.services.revocation import revoke_certificate
from enroll import flows
from enroll.models import EnrollmentRequest, RequestStatus
from tests.cli import ManagePy
from tests.conftest import make_csr, need_program
from tests.harness.softhsm import PIN, SoftHsm, softhsm

pytestmark = [pytest.mark.real_client, pytest.mark.django_db]


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    with softhsm(tmp_path_factory.mktemp("softhsm")) as made:
        yield made


@pytest.fixture
def token(hsm: SoftHsm) -> str:
    return hsm.token()


@pytest.fixture
def token_ca(hsm: SoftHsm, token: str, settings: Settings) -> CertificateAuthority:
    """A root CA (EC P-256) whose key was generated in the token, made by ``manage.py init_ca``; the
    portal reads the PIN from ENROLL_PKCS11_PIN_FILE."""
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file())
    call_command("init_ca", name="Token Root CA", slug="token-root", default=True, **hsm.options(token))
    keys.clear_key_cache()  # what the web workers do: open the token with the configured PIN
    return CertificateAuthority.objects.get(slug="token-root")


def crl_of(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(bytes(current_crl(ca=ca).der))


def submit(user: User) -> EnrollmentRequest:
    return flows.submit_csr(owner=user, data=make_csr(ec.generate_private_key(ec.SECP256R1())))


def pem_file(folder: Path, name: str, *objects: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path = folder / name
    path.write_bytes(b"".join(item.public_bytes(serialization.Encoding.PEM) for item in objects))
    return path


def openssl_verify(folder: Path, chain: list[CertificateAuthority], certificate: Certificate) -> str:
    """``openssl verify -crl_check_all`` of ``certificate`` against the chain and each CA's current CRL."""
    cas = pem_file(folder, "cas.pem", *(ca.certificate for ca in chain))
    crls = pem_file(folder, "crls.pem", *(crl_of(ca) for ca in chain))
    leaf = folder / "leaf.pem"
    leaf.write_bytes(
        x509.load_der_x509_certificate(bytes(certificate.der)).public_bytes(serialization.Encoding.PEM)
    )
    command = [
        need_program("openssl"),
        "verify",
        "-crl_check_all",
        "-CAfile",
        str(cas),
        "-CRLfile",
        str(crls),
    ]
    result = subprocess.run([*command, str(leaf)], capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + result.stderr


def ocsp_status(certificate: Certificate) -> str:
    """The portal's OCSP answer for ``certificate``, its signature checked with the CA certificate."""
    issuer = certificate.ca.certificate
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(x509.load_der_x509_certificate(bytes(certificate.der)), issuer, hashes.SHA256())
        .build()
    )
    answer = ocsp_response(request_der=request.public_bytes(serialization.Encoding.DER))
    response = ocsp.load_der_ocsp_response(answer.der)
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public_key.verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm)
    )
    return answer.status


# --- the key stays in the token ---------------------------------------------------------------------

#: Read the private key's value, then wrap it out with a new AES key: the token refuses both.
EXPORT_ATTEMPT = f"""
import sys, pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
module, token, label = sys.argv[1:]
session = pkcs11.lib(module).get_token(token_label=token).open(rw=True, user_pin="{PIN}")
key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
print(f"extractable={{key[Attribute.EXTRACTABLE]}}")
try:
    print(len(key[Attribute.VALUE]))
except pkcs11.PKCS11Error as exc:
    print(type(exc).__name__)
wrapper = session.generate_key(KeyType.AES, 256, store=False, template={{Attribute.WRAP: True}})
try:
    print(len(wrapper.wrap_key(key)))
except pkcs11.PKCS11Error as exc:
    print(type(exc).__name__)
"""


def test_it_generates_the_ca_key_in_the_token_where_it_cannot_be_read_out(
    token_ca: CertificateAuthority, hsm: SoftHsm, token: str, settings: Settings
) -> None:
    assert token_ca.key_in_token
    assert token_ca.key_file.startswith(f"pkcs11:token={token};object=enroll-ca-token-root;id=%")
    assert "module-path=/usr/lib/softhsm/libsofthsm2.so" in token_ca.key_file
    assert not list(Path(settings.ENROLL_CA_KEY_DIR).glob("token-root*"))  # no key file anywhere
    token_ca.certificate.verify_directly_issued_by(token_ca.certificate)

    backend = keys.key_backend(token_ca)
    assert isinstance(backend, pki_pkcs11.Pkcs11KeyBackend)
    facts = backend.facts()
    assert (facts.sensitive, facts.extractable, facts.can_sign) == (True, False, True)
    assert (facts.always_sensitive, facts.never_extractable) == (True, True)  # born in the token
    with pytest.raises(CAKeyError, match="refuses to reveal the private key"):
        backend.export_value()

    # another process that knows the PIN asks the token itself, past the portal's code
    result = subprocess.run(
        [sys.executable, "-c", EXPORT_ATTEMPT, hsm.module, token, "enroll-ca-token-root"],
        env=hsm.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.split() == ["extractable=False", "AttributeSensitive", "KeyUnextractable"], result
    with pytest.raises(CAKeyError, match="cannot be read out"):
        keys.load_key(token_ca)


# --- a token CA at work -----------------------------------------------------------------------------


def test_a_token_ca_issues_one_and_in_bulk_revokes_publishes_crls_and_answers_ocsp(
    token_ca: CertificateAuthority,
    alice: User,
    bob: User,
    admin_user: User,
    tmp_path: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    one = flows.approve(request_id=submit(alice).pk)
    assert one.certificate is not None, one.reason
    bulk = flows.approve_many(request_ids=[submit(bob).pk for _ in range(3)], actor=admin_user)
    issued = [result.certificate for result in bulk]
    assert all(certificate is not None for certificate in issued), [result.reason for result in bulk]
    certificates = [one.certificate, *(certificate for certificate in issued if certificate is not None)]

    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(certificate=certificates[1], reason=RevocationReason.KEY_COMPROMISE)
    crl = crl_of(token_ca)
    assert crl.is_signature_valid(token_ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(int(certificates[1].serial, 16)) is not None

    chain = [token_ca]
    assert "leaf.pem: OK" in openssl_verify(tmp_path, chain, certificates[0])
    assert "certificate revoked" in openssl_verify(tmp_path, chain, certificates[1])
    for certificate in certificates:
        findings = lint.lint_certificate(der=bytes(certificate.der))
        assert [str(f) for f in findings if f.severity <= Severity.WARNING] == []
    crl_path = tmp_path / "crl.der"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    command = [need_program("lint_crl"), "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", str(crl_path)]
    linted = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert not linted.stdout.strip(), linted.stdout

    assert ocsp_status(certificates[0]) == "good"
    assert ocsp_status(certificates[1]) == "revoked"


def test_an_rsa_intermediate_in_the_token_is_signed_by_its_token_parent_and_serves_scep_through_an_ra(
    token_ca: CertificateAuthority, hsm: SoftHsm, token: str, alice: User, tmp_path: Path
) -> None:
    call_command(
        "init_ca",
        name="Token Issuing CA",
        slug="token-issuing",
        parent="token-root",
        key_type="rsa-3072",
        default=True,
        **hsm.options(token),
    )
    issuing = CertificateAuthority.objects.get(slug="token-issuing")
    assert issuing.key_in_token
    assert issuing.key_type == "rsa-3072"
    issuing.certificate.verify_directly_issued_by(token_ca.certificate)

    approved = flows.approve(request_id=submit(alice).pk)
    assert approved.certificate is not None, approved.reason
    assert "leaf.pem: OK" in openssl_verify(tmp_path, [token_ca, issuing], approved.certificate)

    # an RSA token key cannot decrypt SCEP with a file key: the CA gets an RSA RA, issued through the token
    identity = scep.identity_for(ca=issuing)
    assert identity.ra is not None
    x509.load_der_x509_certificate(bytes(identity.ra.certificate_der)).verify_directly_issued_by(
        issuing.certificate
    )


def test_move_ca_key_moves_a_file_key_into_the_token_and_deletes_the_file(
    ca: CertificateAuthority,
    hsm: SoftHsm,
    token: str,
    alice: User,
    issue_for: Callable[..., Certificate],
    settings: Settings,
    tmp_path: Path,
) -> None:
    before = issue_for(alice)
    key_file = keys.key_path(ca)
    assert key_file.exists()

    call_command("move_ca_key", "test-root", **hsm.options(token))

    moved = CertificateAuthority.objects.get(pk=ca.pk)
    assert moved.key_in_token
    assert not key_file.exists()
    assert moved.certificate_der == ca.certificate_der  # the same CA, the same certificate
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file())
    keys.clear_key_cache()
    backend = keys.key_backend(moved)
    assert isinstance(backend, pki_pkcs11.Pkcs11KeyBackend)
    facts = backend.facts()
    assert (facts.sensitive, facts.extractable) == (True, False)
    assert facts.never_extractable is False  # it lived in a file before: the token says so
    after = issue_for(alice)
    assert "leaf.pem: OK" in openssl_verify(tmp_path, [moved], after)
    assert "leaf.pem: OK" in openssl_verify(tmp_path, [moved], before)

    with pytest.raises(CommandError, match="is in a PKCS#11 token already"):
        call_command("move_ca_key", "test-root", **hsm.options(token))


def test_import_ca_points_at_a_key_already_in_the_token(hsm: SoftHsm, token: str, tmp_path: Path) -> None:
    where = pki_pkcs11.TokenKey(module_path=hsm.module, token=token, label="existing-ca-key")
    backend = pki_pkcs11.generate_key(where=where, pin=PIN, key_type=CAKeyType.EC_P384)
    builder = ca_certificate_builder(
        subject=build_ca_name(common_name="Existing Token CA", organization=None),
        public_key=backend.public_key(),
        serial=new_serial(),
        not_before=utcnow() - dt.timedelta(minutes=5),
        not_after=utcnow() + dt.timedelta(days=3650),
    )
    cert_path = pem_file(tmp_path, "existing.pem", sign_certificate(builder=builder, backend=backend))
    other = pki_pkcs11.TokenKey(module_path=hsm.module, token=token, label="another-key")
    pki_pkcs11.generate_key(where=other, pin=PIN, key_type=CAKeyType.EC_P384)

    with pytest.raises(CommandError, match="does not belong to the CA certificate"):
        call_command("import_ca", cert=cert_path, pkcs11_key="another-key", **hsm.options(token))
    call_command(
        "import_ca", cert=cert_path, pkcs11_key="existing-ca-key", slug="existing", **hsm.options(token)
    )

    imported = CertificateAuthority.objects.get(slug="existing")
    assert imported.key_in_token
    assert imported.key_type == "ec-p384"
    assert crl_of(imported).is_signature_valid(imported.certificate.public_key())  # type: ignore[arg-type]


# --- when the token is not there ----------------------------------------------------------------------


def test_a_token_that_went_away_leaves_the_request_waiting_and_says_the_ca_key_is_not_available(
    token_ca: CertificateAuthority, hsm: SoftHsm, token: str, alice: User, settings: Settings
) -> None:
    request = submit(alice)
    settings.ENROLL_PKCS11_PIN_FILE = str(hsm.pin_file("654321", name="wrong-pin"))
    keys.clear_key_cache()

    with pytest.raises(flows.SigningUnavailable, match="refused the PIN") as refused:
        flows.approve(request_id=request.pk)

    assert str(refused.value).startswith("The CA key is not available"), refused.value
    assert EnrollmentRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED
    assert Certificate.objects.filter(ca=token_ca).count() == 0


def test_the_pin_comes_from_the_pin_file_or_else_the_environment_and_nowhere_else(
    token_ca: CertificateAuthority, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ENROLL_PKCS11_PIN_FILE = ""
    monkeypatch.delenv("ENROLL_PKCS11_PIN", raising=False)
    keys.clear_key_cache()
    with pytest.raises(CAKeyError, match="no PIN is configured: set ENROLL_PKCS11_PIN_FILE"):
        keys.key_backend(token_ca)

    monkeypatch.setenv("ENROLL_PKCS11_PIN", PIN)
    backend = keys.key_backend(token_ca)
    assert backend.sign(data=b"probe", algorithm=hashes.SHA256(), purpose=Purpose.CRL)
    assert "pin-" not in token_ca.key_file  # RFC 7512's pin-value and pin-source are never written
    assert PIN not in repr(backend)


def test_a_forked_worker_and_a_session_closed_under_the_portal_sign_again(
    token_ca: CertificateAuthority, hsm: SoftHsm, token: str
) -> None:
    """A gunicorn worker forked after the token was opened initialises the module again (PKCS#11 v2.40
    5.4); a session the token dropped (unplugged and back) is opened again on the next signature."""
    backend = keys.key_backend(token_ca)
    public_key = token_ca.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)

    def signs() -> None:
        signature = backend.sign(data=b"probe", algorithm=hashes.SHA256(), purpose=Purpose.CRL)
        public_key.verify(signature, b"probe", ec.ECDSA(hashes.SHA256()))

    signs()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is its exit status)
        try:
            signs()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    signs()  # the parent's session is untouched by the child

    shared = pki_pkcs11._sessions[(hsm.module, token)]
    with shared.lock:
        shared._session.close()  # the token forgot the session (as when it was unplugged)
    signs()


# --- every failure in one line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(
    hsm: SoftHsm, new_installation: Callable[[Path], ManagePy], tmp_path_factory: pytest.TempPathFactory
) -> ManagePy:
    """manage.py as an operator runs it, seeing the module's SoftHSM2 tokens."""
    return new_installation(tmp_path_factory.mktemp("cli"))


def no_sign_key(hsm: SoftHsm, token: str, folder: Path) -> Path:
    """A CA certificate whose key is in the token without the sign permission (CKA_SIGN false); the
    certificate file's path."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = ca_certificate_builder(
        subject=build_ca_name(common_name="Unsigning CA", organization=None),
        public_key=key.public_key(),
        serial=new_serial(),
        not_before=utcnow() - dt.timedelta(minutes=5),
        not_after=utcnow() + dt.timedelta(days=30),
    )
    from ca.pki.signing import PrivateKeyBackend

    certificate = sign_certificate(builder=builder, backend=PrivateKeyBackend(key=key))
    where = pki_pkcs11.TokenKey(module_path=hsm.module, token=token, label="no-sign")
    pki_pkcs11.import_key(where=where, pin=PIN, key=key)
    script = f"""
import pkcs11
session = pkcs11.lib("{hsm.module}").get_token(token_label="{token}").open(rw=True, user_pin="{PIN}")
key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="no-sign")
key[pkcs11.Attribute.SIGN] = False
"""
    subprocess.run([sys.executable, "-c", script], env=hsm.env(), check=True, timeout=60)
    return pem_file(folder, "no-sign.pem", certificate)


ERRORS = {
    "wrong PIN": "refused the PIN (CKR_PIN_INCORRECT)",
    "empty PIN file": "is empty; it must hold the token's user PIN",
    "missing PIN file": "cannot be read (No such file or directory)",
    "missing token": "There is no PKCS#11 token labelled 'no-such-token'",
    "missing module": "The PKCS#11 module /usr/lib/no-such-pkcs11.so does not exist",
    "key without the sign permission": "may not sign (CKA_SIGN is false)",
    "no such key": "holds no private key 'no-such-key'",
    "module option alone": "Give both --pkcs11-module PATH and --pkcs11-token LABEL.",
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_token_failure_is_one_plain_line_and_a_non_zero_exit(
    case: str, cli: ManagePy, hsm: SoftHsm, tmp_path: Path
) -> None:
    token = hsm.token()
    options = hsm.argv(token)
    init = ["init_ca", "--name", f"CA {case}"]
    match case:
        case "wrong PIN":
            argv = [*init, *hsm.argv(token, pin_file=hsm.pin_file("000000", name="wrong"))]
        case "empty PIN file":
            empty = tmp_path / "empty-pin"
            empty.write_text("\n")
            argv = [*init, *hsm.argv(token, pin_file=empty)]
        case "missing PIN file":
            argv = [*init, *hsm.argv(token, pin_file=tmp_path / "nowhere")]
        case "missing token":
            argv = [*init, *hsm.argv("no-such-token")]
        case "missing module":
            argv = [*init, *options]
            argv[argv.index(hsm.module)] = "/usr/lib/no-such-pkcs11.so"
        case "key without the sign permission":
            argv = ["import_ca", "--cert", str(no_sign_key(hsm, token, tmp_path)), "--pkcs11-key", "no-sign"]
            argv += options
        case "no such key":
            cert = no_sign_key(hsm, token, tmp_path)
            argv = ["import_ca", "--cert", str(cert), "--pkcs11-key", "no-such-key", *options]
        case _:
            argv = [*init, "--pkcs11-module", hsm.module]

    result = cli.run(*argv)

    stderr = result.stderr.decode()
    assert result.returncode != 0, result.stdout.decode()
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert ERRORS[case] in line, line


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (pkcs11.exceptions.DeviceMemory(), "is full (CKR_DEVICE_MEMORY) and could not sign: delete objects"),
        (pkcs11.exceptions.PinLocked(), "is locked after too many wrong tries"),
        (pkcs11.exceptions.TokenWriteProtected(), "is write-protected"),
        (pkcs11.exceptions.PKCS11Error("Unmapped error code 0x68"), "may not sign (CKA_SIGN is false)"),
        (pkcs11.exceptions.MechanismInvalid(), "cannot sign with this kind of key"),
        (pkcs11.exceptions.GeneralError(), "could not sign (GeneralError): check the token"),
    ],
)
def test_the_token_answers_that_softhsm2_cannot_be_made_to_give_are_plain_words_too(
    error: Exception, says: str
) -> None:
    """SoftHSM2 does not report a full token (a failed write of its object store corrupts the token
    instead), a locked PIN takes ten wrong tries, and it refuses no mechanism the portal uses: the
    return values an HSM gives are put in words all the same."""
    with (
        pytest.raises(CAKeyError, match=r"^The (PKCS#11 token|private key|user PIN)") as raised,
        pki_pkcs11._plain_errors(module_path="/hsm.so", token="hsm", doing="sign", key="'ca'"),
    ):
        raise error
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:ca.key.pem", "starts with 'pkcs11:'"),
        ("pkcs11:token=t;object=o", "lacks module-path"),
        ("pkcs11:object=o?module-path=/m.so", "lacks token"),
        ("pkcs11:token;object=o?module-path=/m.so", "'token' has no value"),
    ],
)
def test_a_key_location_that_is_no_usable_pkcs11_uri_is_refused(uri: str, reason: str) -> None:
    with pytest.raises(pki_pkcs11.UriError, match=reason):
        pki_pkcs11.TokenKey.parse(uri)


def test_a_token_key_uri_round_trips_with_odd_labels() -> None:
    where = pki_pkcs11.TokenKey(
        module_path="/opt/hsm lib/p11.so", token="CA token;1", label="a/b=c", id=b"\x00\xff"
    )
    assert pki_pkcs11.TokenKey.parse(where.uri()) == where
    assert where.uri().startswith("pkcs11:token=CA%20token%3B1;object=a%2Fb%3Dc;id=%00%ff;type=private?")
