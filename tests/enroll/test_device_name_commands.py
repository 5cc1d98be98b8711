"""Device names on the command line: ``submit_csr --device NAME`` and ``submit_spkac --device NAME``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from enroll import challenges
from enroll.models import EnrollmentRequest, SpkacChallenge
from tests.conftest import make_csr
from tests.spkac_tools import build_spkac

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


@pytest.fixture
def csr_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.csr"
    path.write_bytes(make_csr())
    return path


@pytest.fixture
def spkac_file(tmp_path: Path, alice: User) -> Path:
    challenge = challenges.issue(owner=alice, binding=challenges.COMMAND_LINE_BINDING).value
    path = tmp_path / "alice.spkac"
    path.write_text(build_spkac(ec.generate_private_key(ec.SECP256R1()), challenge, algorithm="sha256_ecdsa"))
    return path


@pytest.mark.parametrize("command", ["submit_csr", "submit_spkac"])
def test_it_stores_the_device_name_given_with_device(
    alice: User, csr_file: Path, spkac_file: Path, command: str
) -> None:
    source = csr_file if command == "submit_csr" else spkac_file

    lines = run(command, "--user", "alice", "--device", " Build server 3 ", str(source))

    assert EnrollmentRequest.objects.get(pk=int(lines[-1])).device_name == "Build server 3"


def test_without_device_the_request_has_no_device_name(alice: User, csr_file: Path) -> None:
    lines = run("submit_csr", "--user", "alice", str(csr_file))

    assert EnrollmentRequest.objects.get(pk=int(lines[-1])).device_name == ""


@pytest.mark.parametrize(
    ("bad_name", "words"),
    [
        ("x" * 65, "at most 64 characters"),
        ("build\nserver", "control character"),
        ("build\u202eserver", "text-direction override"),
    ],
)
@pytest.mark.parametrize("command", ["submit_csr", "submit_spkac"])
def test_a_bad_device_name_is_refused_with_the_reason_and_nothing_is_stored(
    alice: User, csr_file: Path, spkac_file: Path, command: str, bad_name: str, words: str
) -> None:
    source = csr_file if command == "submit_csr" else spkac_file

    with pytest.raises(CommandError, match=words):
        run(command, "--user", "alice", "--device", bad_name, str(source))

    assert not EnrollmentRequest.objects.exists()
    assert not SpkacChallenge.objects.filter(used_at__isnull=False).exists()
