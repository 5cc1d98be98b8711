"""The public CA downloads (CRLs and CA certificates) answered early in the middleware chain.

Front servers, ``enroll-crl-sync`` and TLS clients poll these URLs all day, without cookies, sessions or
logins. Like WhiteNoise for static files, this middleware hands such a request straight to its view, past
the session, CSRF, authentication, certificate-login, messages, clickjacking and lock-out middleware, none
of which has anything to do for a DER or PEM file. It sits after ``SecurityMiddleware`` and the CSP and
Permissions-Policy middleware, so HTTPS redirects, HSTS and the security headers still apply. Routing stays
in ``ca/urls.py``: the path is resolved as usual (the answer kept per URLconf and path); only the views in
:data:`EARLY_VIEWS` are served here, and an unknown CA's 404 comes from the whole chain like any page's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_urlconf, resolve

from ca import views
from ca.urls import PUBLIC_PREFIX

#: The views answered early: public, read-only, no session or user needed.
EARLY_VIEWS = frozenset({views.crl, views.ca_certificate})


@functools.lru_cache(maxsize=1024)
def _early_match(urlconf: str, path: str) -> ResolverMatch | None:
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return None
    return match if match.func in EARLY_VIEWS else None


class PublicPkiMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if path.startswith(f"/{PUBLIC_PREFIX}"):
            urlconf = getattr(request, "urlconf", None) or get_urlconf() or settings.ROOT_URLCONF
            match = _early_match(urlconf, path)
            if match is not None:
                request.resolver_match = match
                try:
                    response: HttpResponseBase = match.func(request, *match.args, **match.kwargs)
                except Http404:
                    pass  # no such CA: the 404 page comes from the whole chain, like any page's
                else:
                    return response
        return self.get_response(request)
