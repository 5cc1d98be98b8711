"""A new nginx front server set up from the generated files alone, in the order docs/FRONT-SERVERS.md
gives ("A new front server, step by step"), against the live portal: the token ``manage.py frontserver
add`` prints on its last line; the CA bundle from the ``curl`` lines of the nginx configuration; the first
CRL bundle from the first sync in the systemd unit's comments (no reload: nginx is not running yet); nginx
with the generated server block; the sync with the unit's ExecStart, word for word except the reload
command (no systemd here: ``nginx -s reload`` of this instance instead of ``systemctl reload nginx``);
then ``/pki/health.json`` answers 200 with the node green, and a revocation is refused within 5 s.
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
from tests.harness.crlsync import CrlSyncService, reach_seconds
from tests.harness.nginx import NGINX_REFUSED, GeneratedNginx
from tests.harness.portal import IssuedClient, revoke
from tests.harness.process import free_port
from tests.harness.programs import need_program
from tests.harness.tls import HttpsAnswer, https_get, make_server_certificate

pytestmark = [
    pytest.mark.real_client,
    pytest.mark.real_server,
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
    lines = [re.sub(r"^#\s*", "", line) for line in text.splitlines()]
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
        urllib.request.urlopen(url, timeout=30) as answer,
        Path(path).open(  # noqa: S310 (live server)
            "ab" if redirect == ">>" else "wb"
        ) as output,
    ):
        output.write(answer.read())


def test_a_new_nginx_front_server_from_the_generated_files_alone(
    live_server: LiveServer,
    settings: Settings,
    chain: list[CertificateAuthority],
    alice_client: IssuedClient,
    tmp_path: Path,
) -> None:
    settings.ENROLL_PUBLIC_URL = live_server.url  # the URLs the generated files name
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]  # nginx proxies with Host: 127.0.0.1
    etc = tmp_path / "etc-enroll"  # /etc/enroll on a front server
    etc.mkdir()
    paths = ["--ca-bundle", str(etc / "client-ca.pem"), "--crl-bundle", str(etc / "client-crl.pem")]

    # 2. The token: the last line of `frontserver add`, saved with mode 600.
    out = StringIO()
    call_command("frontserver", "add", "web1", stdout=out)
    token_file = etc / "node.token"
    token_file.write_text(out.getvalue().splitlines()[-1] + "\n")
    token_file.chmod(0o600)

    # 3. The CA bundle (the configuration's curl lines) and the first CRL bundle (the unit's first sync).
    port = free_port()
    tls = make_server_certificate(tmp_path / "tls")
    nginx_conf = render(
        "nginx",
        *("--port", str(port), "--server-name", "127.0.0.1", "--upstream", live_server.url),
        *("--tls-cert", str(tls.cert_path), "--tls-key", str(tls.key_path), *paths),
    )
    curls = commands(nginx_conf, "curl ")
    assert len(curls) == len(chain)
    for argv in curls:
        fetch(argv)
    sync_program = need_program("enroll-crl-sync")
    unit = render(
        "systemd",
        *("--server", "nginx", "--node", "web1", "--token-file", str(token_file)),
        *("--sync-program", sync_program, *paths),
    )
    first, service = commands(unit, sync_program)[0], commands(unit, f"ExecStart={sync_program}")[0]
    assert "--reload-command" not in first
    run = subprocess.run(first, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert (etc / "client-crl.pem").exists()

    # 4. nginx with the generated server block, started.
    nginx = GeneratedNginx(tmp_path / "nginx", server_block=nginx_conf, port=port).start()
    try:
        # 5. The service: the unit's ExecStart, with this nginx's reload instead of systemctl's.
        argv = [service[0].removeprefix("ExecStart="), *service[1:]]
        reload_at = argv.index("--reload-command") + 1
        assert argv[reload_at] == "systemctl reload nginx"
        argv[reload_at] = nginx.reload_command
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
                    f"https://127.0.0.1:{port}/accounts/login/",
                    server_ca=tls.ca_path,
                    cert_path=alice_client.cert_path,
                    key_path=alice_client.key_path,
                )

            let_in = get()
            assert let_in.status == 200, let_in  # proxied to the portal's login page
            seconds = reach_seconds(get, lambda: revoke(alice_client.certificate))
            refused = get()
            assert refused.status == 400, refused
            assert NGINX_REFUSED in refused.text
            assert seconds <= 5.0, seconds
    finally:
        nginx.stop()
