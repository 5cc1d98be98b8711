"""A browser without JavaScript for load tests: :class:`WebClient` (one keep-alive HTTP/1.1 connection, its
own cookies, Django's CSRF token on every POST) and what it gets back (:class:`WebAnswer`)."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie


@dataclass(frozen=True, slots=True)
class WebAnswer:
    """One HTTP answer as :class:`WebClient` got it (header names in lower case, last one wins)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def location(self) -> str:
        """The path (and query) a redirect points to, without scheme and host."""
        parts = urllib.parse.urlsplit(self.headers.get("location", ""))
        return parts.path + (f"?{parts.query}" if parts.query else "")


class WebClient:
    """A browser without JavaScript for load tests: one keep-alive HTTP/1.1 connection to ``base``
    (``http://127.0.0.1:PORT``), its own cookies, Django's CSRF token on every POST (form field and
    ``X-CSRFToken`` header, from the ``csrftoken`` cookie), no redirects followed.

    ``on_answer(method, path, status)`` sees every answer (for counting); a connection error is passed on
    as status 0 and raised. Not shared between threads: one client per simulated person.
    """

    def __init__(
        self,
        base: str,
        *,
        on_answer: Callable[[str, str, int], None] | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"not an http://HOST:PORT URL: {base}")
        self.base = base.rstrip("/")
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self.on_answer = on_answer
        self.cookies: dict[str, str] = {}
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _remember(self, set_cookies: list[str]) -> None:
        for header in set_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)  # deleted (logout, a consumed message)
                else:
                    self.cookies[name] = morsel.value

    def request(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> WebAnswer:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._connection.request(method, path, body=body or None, headers=sent)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            if self.on_answer is not None:
                self.on_answer(method, path, 0)
            raise
        self._remember(response.msg.get_all("Set-Cookie") or [])
        if response.will_close:
            self.close()
        if self.on_answer is not None:
            self.on_answer(method, path, response.status)
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return WebAnswer(response.status, answer_headers, data)

    def get(self, path: str) -> WebAnswer:
        return self.request("GET", path)

    def post(self, path: str, form: Mapping[str, str | Sequence[str]]) -> WebAnswer:
        """POST ``form`` (a list value repeats the field) with the CSRF token of the ``csrftoken`` cookie."""
        token = self.cookies.get("csrftoken", "")
        body = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": token}, doseq=True).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": token}
        return self.request("POST", path, body=body, headers=headers)
