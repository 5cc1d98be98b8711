"""URLconf of the benchmark's web server only (``manage.py benchmark``): the portal plus a trivial view.

The trivial view goes through the same middleware as every page and does nothing else: the CRL
endpoint's requests per second are compared with it. Never part of the production URLconf.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok\n", content_type="text/plain")


urlpatterns = [
    path("bench/trivial", trivial, name="bench-trivial"),
    path("", include("enroll.urls")),
]
