"""Debian's Chromium driven by Playwright for tests: :class:`ChromiumThread` (the browser in a thread of its
own), :func:`visit` for one request, :class:`BrowserSession` for steps that keep a login, :func:`shoot` for
screenshots at two widths, and Playwright's ``client_certificates`` entries (:func:`client_certificate`).

Playwright must use Debian's ``chromium``, never ``playwright install`` (docs/FRONT-SERVERS.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

from tests.harness.process import REPO, StartStop
from tests.harness.programs import need_program
from tests.harness.tls import HttpsAnswer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, ViewportSize

P = ParamSpec("P")
T = TypeVar("T")

#: Flags for Debian's Chromium as root in a container.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def screenshot_dir() -> Path:
    """The folder for screenshots: ``$ENROLL_ARTIFACTS_DIR`` or ``<repo>/test-artifacts/screenshots``."""
    configured = os.environ.get("ENROLL_ARTIFACTS_DIR", "")
    folder = Path(configured) if configured else REPO / "test-artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def launch_chromium(playwright: Playwright, **kwargs: Any) -> Browser:
    """Debian's Chromium, headless, with the flags it needs here (never Playwright's own download).

    Call ``need_program("chromium")`` in the test's thread first if this runs in another thread (a skip
    raised there still reaches the test, but reads less clearly).
    """
    kwargs.setdefault("executable_path", need_program("chromium"))
    kwargs.setdefault("headless", True)
    return playwright.chromium.launch(args=list(CHROMIUM_ARGS), **kwargs)


def client_certificate(
    origin: str,
    *,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    pfx_path: Path | None = None,
    passphrase: str | None = None,
) -> dict[str, str]:
    """One entry of Playwright's ``client_certificates``: PEM certificate + key files, or a PKCS#12 file."""
    entry = {"origin": origin}
    if pfx_path is not None:
        entry["pfxPath"] = str(pfx_path)
        if passphrase is not None:
            entry["passphrase"] = passphrase
    elif cert_path is not None and key_path is not None:
        entry["certPath"] = str(cert_path)
        entry["keyPath"] = str(key_path)
        if passphrase is not None:
            entry["passphrase"] = passphrase
    else:
        raise ValueError("give cert_path and key_path, or pfx_path")
    return entry


def new_context(
    browser: Browser, *, certificates: Sequence[dict[str, str]] = (), **kwargs: Any
) -> BrowserContext:
    """A fresh browser context (no shared connections or TLS sessions) presenting ``certificates``.

    ``ignore_https_errors`` is on: test servers use a throwaway server CA. Playwright makes the TLS
    connection itself for an origin with a client certificate, so each entry's origin must match exactly.
    """
    kwargs.setdefault("ignore_https_errors", True)
    if certificates:
        kwargs["client_certificates"] = list(certificates)
    return browser.new_context(**kwargs)


#: The two widths every page is saved at (:func:`shoot`); browser contexts here start at desktop width.
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


def shoot(page: Page, name: str) -> None:
    """Save the page at desktop and at phone width: ``<screenshot_dir>/<name>-desktop.png`` and
    ``-phone.png`` (``name`` may start with a folder, e.g. ``"journey/01-sign-up"``)."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        path = screenshot_dir() / f"{name}-{label}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size(size)
        page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(DESKTOP)


def visit(
    browser: Browser, url: str, certificates: Sequence[dict[str, str]] = (), *, shot: str | None = None
) -> HttpsAnswer:
    """GET ``url`` in a fresh context presenting ``certificates`` (see :func:`client_certificate`): the
    HTTP status and the page's text; ``shot`` names its screenshots (:func:`shoot`)."""
    context = new_context(browser, certificates=certificates, viewport=DESKTOP)
    try:
        page = context.new_page()
        response = page.goto(url, wait_until="load")
        assert response is not None
        text = page.locator("body").inner_text()
        if shot:
            shoot(page, shot)
        return HttpsAnswer(response.status, text)
    finally:
        context.close()


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """A browser context that stays open across steps (the login cookie, IndexedDB) and its page.

    Playwright objects: make, use and close it in the Playwright thread, e.g.
    ``session = chromium.call(open_session, base)``, ``chromium.call(close_session, session)``.
    """

    context: BrowserContext
    page: Page
    base: str
    #: Content-Security-Policy violations the pages reported (:func:`close_session` asserts there are none).
    csp_violations: list[str] = field(default_factory=list)

    def open(self, path: str) -> Page:
        """Go to ``path`` under :attr:`base` (or to a full URL); the answer must not be an HTTP error."""
        response = self.page.goto(self.base + path if path.startswith("/") else path)
        assert response is not None
        assert response.status < 400, f"{path}: HTTP {response.status}"
        return self.page


def open_session(browser: Browser, /, base: str, **kwargs: Any) -> BrowserSession:
    """A :class:`BrowserSession` on ``base`` at desktop width (``kwargs`` as for :func:`new_context`)."""
    kwargs.setdefault("viewport", DESKTOP)
    context = new_context(browser, **kwargs)
    # Every violation of the portal's CSP (an inline script, style or handler, eval, another origin):
    # the page's securitypolicyviolation events, and Chromium's own console messages about them.
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: "
        "${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`));"
    )
    session = BrowserSession(context, context.new_page(), base)

    def on_console(message: ConsoleMessage) -> None:
        if "CSP violation" in message.text or "Content Security Policy" in message.text:
            session.csp_violations.append(f"{session.page.url}: {message.text}")

    session.page.on("console", on_console)
    return session


def close_session(_browser: Browser, session: BrowserSession) -> None:
    session.context.close()
    assert session.csp_violations == [], "\n".join(session.csp_violations)


class ChromiumThread(StartStop):
    """Debian's Chromium, driven through Playwright's sync API in a thread of its own.

    Why a thread: between two calls, Playwright's sync API leaves its asyncio loop marked as running in
    the calling thread. Django then refuses ORM calls there (SynchronousOnlyOperation), and with
    DJANGO_ALLOW_ASYNC_UNSAFE it silently opens *another* database connection (asgiref keys connections
    by context while a loop runs): it cannot see the test's transaction, and SQLite answers "database
    table is locked". Keeping Playwright in this thread leaves the test's thread free for the ORM.

    Every Playwright object belongs to this thread: pass a function that gets the browser::

        def visit(browser: Browser, url: str) -> int: ...
        status = chromium.call(visit, server.url)
    """

    def __init__(self, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def start(self) -> Self:
        executable = need_program("chromium")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        try:
            self._executor.submit(self._start, executable).result(timeout=self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = launch_chromium(self._playwright, executable_path=executable)

    def call(self, function: Callable[Concatenate[Browser, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``function(browser, *args, **kwargs)`` in the Playwright thread and return its result."""
        if self._executor is None or self._browser is None:
            raise RuntimeError("Chromium is not running")
        return self._executor.submit(function, self._browser, *args, **kwargs).result(timeout=self.timeout)

    def _stop(self) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._browser = None
            if self._playwright is not None:
                self._playwright.stop()
            self._playwright = None

    def stop(self) -> None:
        """Close the browser and Playwright's driver. Safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            executor.submit(self._stop).result(timeout=self.timeout)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)  # a hung call must not hang the teardown
            raise
        executor.shutdown(wait=True)


#: User agents of the platforms the install chooser guesses (a Mac and an Android phone, Chrome on each).
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36"
)
