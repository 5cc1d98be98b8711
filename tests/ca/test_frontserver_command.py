"""``manage.py frontserver``: register, list, rotate and remove front servers; the token is printed once."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from ca.models import CertificateAuthority, FrontServer
from ca.services.authorities import create_ca
from ca.services.crl import current_crl
from tests.ca.reporting import make_report, post_report, report_installed, signed


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("frontserver", *args, stdout=out)
    return out.getvalue().rstrip("\n").split("\n")


def test_add_prints_the_token_alone_on_the_last_line_and_it_works_as_the_nodes_key(
    client: Client, ca: CertificateAuthority
) -> None:
    lines = run("add", "web1")

    token = lines[-1]
    assert "token file" in lines[-2]
    assert "mode 600" in lines[-2]
    assert "web1" in lines[0]
    assert ca.slug in lines[0]
    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number)])


def test_add_with_cas_carries_those(ca: CertificateAuthority) -> None:
    other = create_ca(name="Other", slug="other", make_default=False)

    run("add", "web1", "--ca", "other")

    assert list(FrontServer.objects.get(name="web1").cas.all()) == [other]


def test_list_shows_each_node_with_its_cas_last_report_outcome_and_color(
    client: Client, ca: CertificateAuthority
) -> None:
    token = run("add", "web1")[-1]
    run("add", "web2")
    report_installed(client, node="web1", token=token, crls=[(ca, current_crl(ca=ca).number)])

    lines = run("list")

    assert lines[0].startswith("web1\t")
    assert f"CAs: {ca.slug}" in lines[0]
    assert "outcome: installed" in lines[0]
    assert "green" in lines[0]
    assert lines[1].startswith("web2\t")
    assert "last report: never" in lines[1]
    assert "red (has never reported)" in lines[1]


def test_rotate_prints_a_new_token_and_the_old_one_stops_working(
    client: Client, ca: CertificateAuthority
) -> None:
    old = run("add", "web1")[-1]

    new = run("rotate", "web1")[-1]

    assert new != old
    body, signature = signed(make_report(node="web1"), old)
    assert post_report(client, body, signature).status_code == 403
    report_installed(client, node="web1", token=new, crls=[])


def test_remove_forgets_the_node(ca: CertificateAuthority) -> None:
    run("add", "web1")

    run("remove", "web1")

    assert not FrontServer.objects.exists()
    assert run("list") == ["No front server registered: manage.py frontserver add NAME."]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("add", "web 1"), "cannot be a front server's name"),
        (("add", "web1", "--ca", "nope"), "There is no CA with the slug 'nope'"),
        (("rotate", "web9"), "There is no front server named 'web9'"),
        (("remove", "web9"), "There is no front server named 'web9'"),
    ],
)
def test_errors_are_plain_words(ca: CertificateAuthority, args: tuple[str, ...], words: str) -> None:
    with pytest.raises(CommandError, match=words):
        run(*args)


def test_adding_a_name_twice_is_an_error(ca: CertificateAuthority) -> None:
    run("add", "web1")
    with pytest.raises(CommandError, match="registered already"):
        run("add", "web1")
