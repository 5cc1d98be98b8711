"""manage.py frontend_config signer: the portal host's systemd unit for the signer (docs/OPERATIONS.md).

The unit runs the signer as its own user, with its socket in the folder systemd makes for it, reads the key's
secret from the signer's own environment file, and never carries a passphrase or PIN itself; the web user is
the one told to join the socket's group and to get ENROLL_SIGNER_SOCKET.
"""

from __future__ import annotations

import configparser
import shlex
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError


def render(*args: str) -> str:
    out = StringIO()
    call_command("frontend_config", "signer", *args, stdout=out)
    return out.getvalue()


def unit_of(text: str) -> configparser.ConfigParser:
    body = text.split("---- /etc/systemd/system/", 1)[1].split("\n", 1)[1]
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(body)
    return parser


def test_it_runs_the_signer_as_its_own_user_on_a_socket_in_its_runtime_folder() -> None:
    unit = unit_of(render())
    service = unit["Service"]
    assert service["User"] == "enroll-signer"
    assert service["Group"] == "enroll-signer-clients"
    assert service["RuntimeDirectory"] == "enroll-signer"
    assert service["RuntimeDirectoryMode"] == "0750"
    assert service["EnvironmentFile"] == "/etc/enroll-signer/env"
    argv = shlex.split(service["ExecStart"])
    assert argv[1:4] == ["manage.py", "signer", "--socket"]
    assert argv[4] == "/run/enroll-signer/signer.sock"
    assert service["WorkingDirectory"] == str(settings.BASE_DIR)
    assert service["ReadOnlyPaths"] == str(settings.ENROLL_CA_KEY_DIR)


def test_its_command_line_is_one_the_signer_command_accepts() -> None:
    argv = shlex.split(unit_of(render())["Service"]["ExecStart"])
    command = load_command_class("ca", "signer")
    parsed = command.create_parser("manage.py", "signer").parse_args(argv[3:])
    assert parsed.socket == "/run/enroll-signer/signer.sock"


def test_it_tells_the_web_user_to_take_the_socket_and_drop_the_secrets() -> None:
    text = render("--web-user", "www-data", "--signer-user", "ca-signer")
    assert "usermod -aG ca-signer-clients www-data" in text
    assert "ENROLL_SIGNER_SOCKET=/run/ca-signer/signer.sock" in text
    assert "ENROLL_SIGNER_ALLOWED_UIDS=<id -u www-data>" in text
    assert "--web-user www-data" in text.splitlines()[1]
    unit = unit_of(text)["Service"]
    values = "".join(unit.values())
    assert "PASSPHRASE" not in values
    assert "PIN" not in values


@pytest.mark.parametrize("user", ["root; rm -rf /", "a b", "$(id)", "x/y"])
def test_it_refuses_a_user_name_that_is_not_plain(user: str) -> None:
    with pytest.raises(CommandError, match="plain user name"):
        render("--signer-user", user)
