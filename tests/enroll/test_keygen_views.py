"""The key generation page and its CSR endpoint (portal:keygen, portal:keygen-submit), without a browser.

The browser side (WebCrypto, PKCS#10, .p12) is tested in Chromium by tests/realclients/test_browser_keygen.py.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from enroll.models import EnrollmentRequest, RequestKind, RequestStatus
from tests.conftest import make_csr

pytestmark = pytest.mark.django_db


def test_page_needs_login(client: Client) -> None:
    response = client.get(reverse("portal:keygen"))
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_page_has_no_inline_script_and_passes_data_as_json(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.get(reverse("portal:keygen"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="keygen-insecure"' in html
    assert 'id="keygen-config" type="application/json"' in html
    for tag in html.split("<script")[1:]:
        head = tag.split(">", 1)[0]
        assert "src=" in head or 'type="application/json"' in head, head
    assert 'value="ec-p256"' in html


def test_unverified_user_sees_the_blocker(client: Client) -> None:
    user = User.objects.create_user("newbie", "newbie@example.com", "newbie-password-123")
    client.force_login(user)
    html = client.get(reverse("portal:keygen")).content.decode()
    assert "Verify your e-mail address first" in html
    assert 'id="keygen-form"' not in html
    response = client.post(reverse("portal:keygen-submit"), {"csr": make_csr().decode()})
    assert response.status_code == 403
    assert not EnrollmentRequest.objects.exists()


def test_submit_stores_the_csr_and_answers_json(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("portal:keygen-submit"), {"csr": make_csr().decode()})
    assert response.status_code == 200
    answer = json.loads(response.content)
    request = EnrollmentRequest.objects.get()
    assert answer["ok"] is True
    assert answer["request_id"] == request.pk
    assert answer["url"] == reverse("portal:request-detail", args=[request.pk])
    assert request.owner == alice
    assert request.kind == RequestKind.CSR
    assert request.status == RequestStatus.SUBMITTED
    assert answer["key_description"] == request.key_description == "ECDSA P-256"


@pytest.mark.parametrize("csr", ["", "not a csr", "x" * 20000])
def test_submit_refuses_garbage(client: Client, alice: User, csr: str) -> None:
    client.force_login(alice)
    response = client.post(reverse("portal:keygen-submit"), {"csr": csr})
    assert response.status_code == 400
    answer = json.loads(response.content)
    assert answer["ok"] is False
    assert answer["error"]
    assert not EnrollmentRequest.objects.exists()


def test_submit_needs_csrf_token(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("portal:keygen-submit"), {"csr": make_csr().decode()})
    assert response.status_code == 403
    assert not EnrollmentRequest.objects.exists()


def test_submit_is_post_only(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("portal:keygen-submit")).status_code == 405
