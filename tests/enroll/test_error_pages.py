"""The error pages with debug off (400, 403, 404, 500 and a failed CSRF check): styled like every page (the
site's navigation, the favicon), each saying what happened and what to do; 500 renders without any request
context, as Django renders it. Plus ``/favicon.ico``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.test import Client
from django.urls import include, path, reverse
from pytest_django.fixtures import Settings


def _raise_400(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("a request the portal cannot read")


def _raise_403(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def _raise_500(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


#: The portal's URLs plus views that fail (this module is the URLconf of the tests that need them).
urlpatterns = [
    path("fail/400/", _raise_400),
    path("fail/403/", _raise_403),
    path("fail/500/", _raise_500),
    path("", include("enroll.urls")),
]

pytestmark = pytest.mark.urls(__name__)


@pytest.fixture(autouse=True)
def _debug_off(settings: Settings) -> None:
    settings.DEBUG = False


def logged_in(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


PAGES = [
    pytest.param("/fail/400/", 400, "The portal could not understand this request", "try again", id="400"),
    pytest.param("/fail/403/", 403, "You are not allowed to do this", "right one", id="403"),
    pytest.param("/no-such-page/", 404, "Page not found", "My certificates", id="404"),
    pytest.param(
        "/fail/500/", 500, "Something went wrong on the portal", "Try again in a few minutes", id="500"
    ),
]


@pytest.mark.parametrize(("url", "status", "heading", "advice"), PAGES)
def test_each_error_page_has_the_navigation_and_says_what_happened_and_what_to_do(
    alice: User, url: str, status: int, heading: str, advice: str
) -> None:
    response = logged_in(alice).get(url)

    assert response.status_code == status
    page = response.content.decode()
    assert f'<h1 class="h3">{heading}' in page
    assert advice in page
    assert 'aria-label="Main navigation"' in page
    assert f'href="{reverse("portal:help")}"' in page
    assert 'rel="icon"' in page
    assert f'data-status="{status}"' in page


def test_the_404_page_knows_the_logged_in_person(alice: User) -> None:
    page = logged_in(alice).get("/no-such-page/").content.decode()

    assert "alice" in page  # the navigation of a logged-in person
    assert '<code class="text-break">/no-such-page/</code>' in page


def test_the_404_page_escapes_the_address(db: None) -> None:
    page = Client().get("/%3Cscript%3Ealert(1)%3C/script%3E/").content.decode()

    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;" in page


def test_a_missing_certificate_gives_the_styled_404(alice: User) -> None:
    response = logged_in(alice).get(reverse("portal:certificate-detail", args=[999999]))

    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_the_500_page_renders_without_any_request_context() -> None:
    page = render_to_string("500.html")

    assert "Something went wrong on the portal" in page
    assert 'aria-label="Main navigation"' in page


def test_a_failed_csrf_check_gives_the_styled_page(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(reverse("portal:request-new"), {"csr_text": "x"})

    assert response.status_code == 403
    page = response.content.decode()
    assert '<h1 class="h3">The form could not be accepted' in page
    assert "reload the page and send the form again" in page
    assert 'aria-label="Main navigation"' in page


def test_favicon_ico_leads_to_the_icon(client: Client, db: None) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 301
    assert response["Location"].endswith("favicon.svg")
