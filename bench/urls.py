"""URLconf of the benchmark's web server only (:mod:`bench.settings`): the portal plus a trivial view.

The trivial view goes through the same middleware as every page and does nothing else: the CRL
endpoint's requests per second are compared with it. Never part of the portal's URLconf.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.urls import include, path


def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok\n", content_type="text/plain")


def trivial_not_modified(request: HttpRequest) -> HttpResponse:
    """The same, answering 304 without looking: what a 304 costs the server and client themselves."""
    return HttpResponseNotModified()


urlpatterns = [
    path("bench/trivial", trivial, name="bench-trivial"),
    path("bench/trivial-304", trivial_not_modified, name="bench-trivial-304"),
    path("", include("enroll.urls")),
]
