"""A new front server (nginx, Apache, node) set up from the generated files alone, in the order
docs/FRONT-SERVERS.md gives ("A new front server, step by step"), against the live portal: the token
``manage.py frontserver add`` prints on its last line; the CA bundle from the ``curl`` lines of the
generated file; the first CRL bundle from the first sync in the systemd unit's comments (no reload: the
server is not running yet);
the server with its generated file (nginx: the server block; Apache: the site in a copy of Debian's
/etc/apache2 with the ``a2enmod`` modules; node: the script); the sync with the unit's ExecStart, word for
word except the reload command (no systemd here: this nginx's ``-s reload`` or Apache's graceful restart
instead of ``systemctl reload``; node has none); then ``/pki/health.json`` answers 200 with the node
green, and a revocation is refused within 5 s.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from ca.models import CertificateAuthority
from tests.harness.apache import DebianApache
from tests.harness.crlsync import CrlSyncService, reach_seconds
from tests.harness.nginx import NGINX_REFUSED, GeneratedNginx
from tests.harness.node import GeneratedNode
from tests.harness.portal import IssuedClient, revoke
from tests.harness.process import free_port
from tests.harness.programs import need_program
from tests.harness.tls import HttpsAnswer, https_get, make_server_certificate

pytestmark = [
    pytest.mark.real_client,
    pytest.mark.real_server,
    pytest.mark.timed,  # within 5 s: runs alone (tests/conftest.py)
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("chain_kind", ["intermediate"]),
]


def render(*args: str) -> str:
    out = StringIO()
    call_command("frontend_config", *args, stdout=out)
    return out.getvalue()


def commands(text: str, first_word: str) -> list[list[str]]:
    """The command lines starting with ``first_word`` in ``text``, comment marks and backslash
    continuations removed, split as a shell would."""
    lines = [re.sub(r"^(#|//)\s*", "", line) for line in text.splitlines()]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = [line.strip() for line in joined.splitlines()]
    return [shlex.split(line) for line in found if line.startswith(first_word)]


def fetch(argv: list[str]) -> None:
    """``curl -fsS URL >|>> FILE`` as the generated configuration says, by curl when there is one."""
    url, redirect, path = argv[-3:]
    curl = shutil.which("curl")
    if curl is not None:
        mode = "ab" if redirect == ">>" else "wb"
        with Path(path).open(mode) as output:
            subprocess.run([curl, "-fsS", url], stdout=output, check=True, timeout=30)
        return
    with (
        urllib.request.urlopen(url, timeout=30) as answer,  # noqa: S310 (the live server)
        Path(path).open("ab" if redirect == ">>" else "wb") as output,
    ):
        output.write(answer.read())


def start_server(
    kind: str, directory: Path, *, text: str, port: int
) -> GeneratedNginx | DebianApache | GeneratedNode:
    """Step 4: the server with its generated file (nginx: in sites-enabled; Apache: a copy of Debian's
    /etc/apache2 with the a2enmod modules and the site; node: the script itself)."""
    if kind == "nginx":
        return GeneratedNginx(directory, server_block=text, port=port).start()
    if kind == "apache":
        return DebianApache(directory, site=text, port=port).start()
    return GeneratedNode(directory, script=text, port=port).start()


@pytest.mark.parametrize(
    ("kind", "path", "reload"),
    [
        ("nginx", "/accounts/login/", "systemctl reload nginx"),
        ("apache", "/accounts/login/", "systemctl reload apache2"),
        ("node", "/", None),
    ],
)
def test_a_new_front_server_from_the_generated_files_alone(
    kind: str,
    path: str,
    reload: str | None,
    live_server: LiveServer,
    settings: Settings,
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    tmp_path: Path,
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url  # the URLs the generated files name
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]  # the front server proxies to it
    etc = tmp_path / "etc-enroll"  # /etc/enroll on a front server
    etc.mkdir()
    paths = ["--ca-bundle", str(etc / "client-ca.pem"), "--crl-bundle", str(etc / "client-crl.pem")]

    # 2. The token: the last line of `frontserver add`, saved with mode 600.
    out = StringIO()
    call_command("frontserver", "add", "web1", stdout=out)
    token_file = etc / "node.token"
    token_file.write_text(out.getvalue().splitlines()[-1] + "\n")
    token_file.chmod(0o600)

    # 3. The CA bundle (the generated file's curl lines) and the first CRL bundle (the unit's first sync).
    port = free_port()
    tls = make_server_certificate(tmp_path / "tls")
    options = ["--port", str(port), "--server-name", "127.0.0.1", "--upstream", live_server.url]
    config = render(kind, *options, "--tls-cert", str(tls.cert_path), "--tls-key", str(tls.key_path), *paths)
    curls = commands(config, "curl ")
    assert len(curls) == len(chain)
    for argv in curls:
        fetch(argv)
    sync_program = need_program("enroll-crl-sync")
    unit = render(
        "systemd",
        *("--server", kind, "--node", "web1", "--token-file", str(token_file)),
        *("--sync-program", sync_program, *paths),
    )
    first, service = commands(unit, sync_program)[0], commands(unit, f"ExecStart={sync_program}")[0]
    assert "--reload-command" not in first
    run = subprocess.run(first, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert (etc / "client-crl.pem").exists()

    # 4. The server with the generated file, started.
    server = start_server(kind, tmp_path / kind, text=config, port=port)
    try:
        # 5. The service: the unit's ExecStart, the reload swapped for this server's (no systemd here).
        argv = [service[0].removeprefix("ExecStart="), *service[1:]]
        if reload is None:
            assert "--reload-command" not in argv  # node watches the file
        else:
            reload_at = argv.index("--reload-command") + 1
            assert argv[reload_at] == reload
            argv[reload_at] = server.reload_command  # type: ignore[union-attr]
        with CrlSyncService.command(tmp_path / "sync", argv):
            # 6. The check: health.json answers 200, web1 green for every CA of the chain.
            deadline = time.monotonic() + 20
            while (health := Client().get("/pki/health.json")).status_code != 200:
                assert time.monotonic() < deadline, health.json()
                time.sleep(0.2)
            nodes = [n for a in health.json()["authorities"] for n in a["nodes"]]
            assert [(n["node"], n["colour"]) for n in nodes] == [("web1", "green")] * len(chain)

            def get() -> HttpsAnswer:
                return https_get(
                    f"https://127.0.0.1:{port}{path}",
                    server_ca=tls.ca_path,
                    cert_path=alice_client.cert_path,
                    key_path=alice_client.key_path,
                )

            let_in = get()
            assert let_in.status == 200, let_in  # nginx, Apache: the portal's login page; node: hello
            seconds = reach_seconds(get, lambda: revoke(alice_client.certificate))
            refused = get()
            if kind == "nginx":
                assert refused.status == 400, refused
                assert NGINX_REFUSED in refused.text
            else:
                assert refused.refused_in_tls, refused
            assert seconds <= 5.0, seconds
    finally:
        server.stop()
