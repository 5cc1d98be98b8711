"""Rate limits and lock-out: who the client is, how often it may act, and the pages that say "not now".

- **Client address**: :func:`accounts.proxies.client_address` (``REMOTE_ADDR``, or from one of
  ``ENROLL_TRUSTED_PROXIES`` what it forwarded in ``X-Forwarded-For``; IPv4-mapped IPv6 as IPv4).
- **Rate limits** (django-ratelimit): per action (``signup``, ``login``, ``submit``, ``challenge``,
  ``password_reset``, ``verify_mail``, ``email_change``), per client address and per account, the rates of
  ``settings.ENROLL_RATE_LIMITS``. Over the limit, the answer is 429 with a ``Retry-After`` header and a
  page (or JSON) saying what happened and when to try again. Counters live in :class:`RateLimitCache`, a
  database table every portal process shares.
- **Mailbox limits**: the e-mails the person-driven endpoints (sign-up, password reset, "send a new link",
  e-mail change) send to one address, per hour and per day (``ENROLL_RATE_LIMITS["mail"]``, counted by
  :func:`check_mailbox` under a hash of the address; docs/MAIL.md).
- **Lock-out** (django-axes): after ``AXES_FAILURE_LIMIT`` failed logins for one username, or from one
  address, logins are refused for ``AXES_COOLOFF_TIME``; :func:`lockout_response` is the page.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec

from axes.helpers import get_cool_off
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.db import connections, router, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.utils.functional import Promise
from django.utils.translation import gettext, ngettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _
from django_ratelimit.core import ALL, _get_window, _make_cache_key, _split_rate, get_usage

from accounts import proxies

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], HttpResponseBase]

#: What each action is, in the words of the 429 page ("Too many ... from your network address"): the
#: sentence is translated whole, with these as its named parts (context "too many", for the case).
ACTIONS: dict[str, Promise] = {
    "signup": pgettext_lazy("too many", "sign-ups"),
    "login": pgettext_lazy("too many", "login attempts"),
    "submit": pgettext_lazy("too many", "certificate requests"),
    "challenge": pgettext_lazy("too many", "SPKAC challenges"),
    "password_reset": pgettext_lazy("too many", "password reset requests"),
    "verify_mail": pgettext_lazy("too many", "requests for a new link"),
    "email_change": pgettext_lazy("too many", "e-mail address changes"),
    "mail": pgettext_lazy("too many", "e-mails"),
}
SCOPES: dict[str, Promise] = {
    "address": _("from your network address"),
    "account": _("for this account"),
    "mailbox": _("to this e-mail address"),
    "mailbox_day": _("to this e-mail address"),
}


# --- the client's address (the rules: accounts.proxies) ---------------------------------------------


def lockout_address(request: HttpRequest) -> str | None:
    """django-axes' client address (AXES_CLIENT_IP_CALLABLE): :func:`accounts.proxies.client_address`,
    None if unknown (axes stores it in an IP address column, empty when the address is unknown)."""
    address = proxies.client_address(request)
    return None if address == proxies.UNKNOWN else address


#: The longest username axes records: Django's User.username holds 150 characters, so no account has a longer
#: one, and axes' own columns hold 255 (a longer value is a database error on PostgreSQL).
LOCKOUT_USERNAME_LENGTH = 150


def lockout_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """django-axes' username (AXES_USERNAME_CALLABLE): the username tried, from the credentials or the form,
    cut to :data:`LOCKOUT_USERNAME_LENGTH` characters; None when there is none.

    Cutting keeps a 5,000-character guess countable (it counts with every guess that shares its first 150
    characters, none of which can be a real account) instead of failing to store it."""
    tried: object = (credentials or {}).get("username")
    if tried is None:
        tried = request.POST.get("username")
    if not isinstance(tried, str):
        return None
    return tried[:LOCKOUT_USERNAME_LENGTH]


# --- the counters' store ---------------------------------------------------------------------------


class RateLimitCache(DatabaseCache):
    """Django's database cache with an atomic ``incr`` (django-ratelimit counts with ``add`` + ``incr``).

    ``DatabaseCache.incr`` reads and writes back, so two processes counting at once lose a count. Here the
    read and write run in one transaction holding the row: ``SELECT ... FOR UPDATE`` on PostgreSQL; on
    SQLite the transaction itself takes the database's write lock (the portal's SQLite settings begin
    transactions IMMEDIATE). ``add`` is already atomic (an INSERT on the primary key).
    """

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        with transaction.atomic(using=db):
            if connection.features.has_select_for_update:
                table = connection.ops.quote_name(self.cache_model_class._meta.db_table)
                column = connection.ops.quote_name("cache_key")
                with connection.cursor() as cursor:
                    # Quoted names from settings (as in DatabaseCache), the key as a parameter.
                    cursor.execute(
                        f"SELECT {column} FROM {table} WHERE {column} = %s FOR UPDATE",  # noqa: S608
                        [self.make_and_validate_key(key, version=version)],
                    )
            return super().incr(key, delta, version=version)


# --- rate limits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """How often a key was counted in the current window of a rate, as django-ratelimit counts it."""

    count: int
    limit: int
    time_left: int  # seconds until the window ends (0 in its last second)

    @property
    def reached(self) -> bool:
        return self.count >= self.limit


def peek(counters: dict[str, tuple[str, str, str]]) -> dict[str, Usage]:
    """Read django-ratelimit counters without counting: name -> (group, key, rate) in, name -> Usage out.

    ``get_usage(increment=False)`` is a write (it adds a zero counter, in a transaction that takes
    SQLite's write lock); this is one SELECT for all of them, in the same cache under the same key
    (``key`` is the value django-ratelimit's key function returns, ``group`` and ``rate`` as given to
    it). Empty when rate limits are off (``RATELIMIT_ENABLE``), as ``get_usage`` returns None then.
    """
    if not settings.RATELIMIT_ENABLE or not counters:
        return {}
    cache_keys: dict[str, str] = {}
    windows: dict[str, tuple[int, int]] = {}
    for name, (group, key, rate) in counters.items():
        limit, period = _split_rate(rate)
        window = _get_window(key, period)
        cache_keys[name] = _make_cache_key(group, window, rate, key, ALL)
        windows[name] = (limit, window)
    found = caches[settings.RATELIMIT_USE_CACHE].get_many(list(cache_keys.values()))
    now = int(time.time())
    return {
        name: Usage(count=int(found.get(cache_key) or 0), limit=windows[name][0],
                    time_left=windows[name][1] - now)
        for name, cache_key in cache_keys.items()
    }  # fmt: skip


@dataclass(frozen=True)
class Refusal:
    """A request over a limit: which action, which scope, and in how many seconds it may come again."""

    action: str
    scope: str
    retry_after: int

    @property
    def message(self) -> str:
        return gettext(
            "Too many %(actions)s %(scope)s in a short time. This limit protects the portal and your "
            "account. Please try again in %(wait)s."
        ) % {
            "actions": ACTIONS[self.action],
            "scope": SCOPES[self.scope],
            "wait": wait_words(self.retry_after),
        }


@dataclass(frozen=True)
class Allowance:
    """How many more times an action may come in the current window of its tightest limit."""

    left: int
    rate: str  # the tightest limit's rate, e.g. ``20/h``
    resets_in: int  # seconds until that window ends

    @property
    def message(self) -> str:
        """``You can try 17 more times this hour.``; the last try says when the next one is possible."""
        period = period_words(self.rate)
        if self.left <= 0:
            return gettext("That was your last try %(period)s: the next one is possible in %(wait)s.") % {
                "period": period,
                "wait": wait_words(self.resets_in),
            }
        if self.left == 1:
            return gettext("You can try once more %(period)s.") % {"period": period}
        return ngettext(
            "You can try %(count)d more time %(period)s.",
            "You can try %(count)d more times %(period)s.",
            self.left,
        ) % {"count": self.left, "period": period}


def period_words(rate: str) -> str:
    """``20/h`` -> ``this hour``, ``10/d`` -> ``today``, ``30/10m`` -> ``in these 10 minutes``."""
    period = rate.partition("/")[2]
    number = int(period.rstrip("smhd") or "1")
    unit = period[-1]
    if number == 1:
        return {"s": gettext("this second"), "m": gettext("this minute"), "h": gettext("this hour")}.get(
            unit, gettext("today")
        )
    plural = {
        "s": ngettext("in this %(number)d second", "in these %(number)d seconds", number),
        "m": ngettext("in this %(number)d minute", "in these %(number)d minutes", number),
        "h": ngettext("in this %(number)d hour", "in these %(number)d hours", number),
        "d": ngettext("in this %(number)d day", "in these %(number)d days", number),
    }[unit]
    return plural % {"number": number}


def allowance(request: HttpRequest, action: str) -> Allowance | None:
    """What is left of ``action``'s limits for this client and account, without counting this look;
    the tightest of them. None when rate limits are off or the action has none."""
    if not settings.RATELIMIT_ENABLE:
        return None
    rates = settings.ENROLL_RATE_LIMITS.get(action, {})
    keys = {
        "address": f"address:{address_key(proxies.client_address(request))}",
        "account": _account_key(request, action),
    }
    tightest: Allowance | None = None
    for scope, key in keys.items():
        rate = rates.get(scope)
        if not rate or key is None:
            continue
        usage = get_usage(
            request,
            group=f"enroll.{action}.{scope}",
            key=lambda _group, _request, key=key: key,
            rate=rate,
            increment=False,
        )
        if usage is None:
            continue
        left = max(0, int(usage["limit"]) - int(usage["count"]))
        if tightest is None or left < tightest.left:
            tightest = Allowance(left=left, rate=rate, resets_in=max(1, int(usage["time_left"]) + 1))
    return tightest


def allowance_message(request: HttpRequest, action: str) -> str:
    """:attr:`Allowance.message` for ``action``, or "" when it has no limit."""
    left = allowance(request, action)
    return left.message if left is not None else ""


def rate_words(rate: str) -> str:
    """``3/h`` -> ``3 an hour``, ``10/d`` -> ``10 a day``, ``30/10m`` -> ``30 every 10 minutes``."""
    count, _sep, period = rate.partition("/")
    number = int(period.rstrip("smhd") or "1")
    unit = period[-1]
    if number == 1:
        single = {
            "s": gettext("%(count)s a second"),
            "m": gettext("%(count)s a minute"),
            "h": gettext("%(count)s an hour"),
            "d": gettext("%(count)s a day"),
        }[unit]
        return single % {"count": count}
    every = {
        "s": ngettext("%(count)s every %(number)d second", "%(count)s every %(number)d seconds", number),
        "m": ngettext("%(count)s every %(number)d minute", "%(count)s every %(number)d minutes", number),
        "h": ngettext("%(count)s every %(number)d hour", "%(count)s every %(number)d hours", number),
        "d": ngettext("%(count)s every %(number)d day", "%(count)s every %(number)d days", number),
    }[unit]
    return every % {"count": count, "number": number}


def mailbox_limit_words() -> str:
    """The mailbox limits in words, ``3 an hour and 10 a day``; empty when there are none."""
    rates = settings.ENROLL_RATE_LIMITS.get("mail", {})
    if not settings.RATELIMIT_ENABLE:
        return ""
    words = [rate_words(rates[scope]) for scope in ("mailbox", "mailbox_day") if rates.get(scope)]
    if len(words) == 2:
        return gettext("%(first)s and %(second)s") % {"first": words[0], "second": words[1]}
    return "".join(words)


def wait_words(seconds: int) -> str:
    """``45 seconds``, ``2 minutes``: how long to wait, in words."""
    if seconds <= 90:
        return ngettext("%(count)d second", "%(count)d seconds", seconds) % {"count": seconds}
    minutes = math.ceil(seconds / 60)
    return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}


def address_key(address: str) -> str:
    """What an address counts as: itself, or for IPv6 its /64 (one host's usual share, which it may
    rotate through at will; django-ratelimit's own default). An IPv4-mapped IPv6 address is its IPv4 one."""
    parsed = proxies.parse_address(address)
    if parsed is None:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _account_key(request: HttpRequest, action: str) -> str | None:
    """The account an action counts against: the logged-in user, or the username a login tries."""
    if action == "login":
        username = str(request.POST.get("username", "")).strip().lower()
        return f"username:{username}" if username else None
    if request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return None


def check(request: HttpRequest, action: str, *, account: str | None = None) -> Refusal | None:
    """Count this request against ``action``'s limits; a :class:`Refusal` if one of them is exceeded.

    ``account`` names the account when the request is not logged in to it (e.g. ``user:<pk>`` of the
    account a verification link was made for)."""
    keys = {
        "address": f"address:{address_key(proxies.client_address(request))}",
        "account": account or _account_key(request, action),
    }
    return _count(request, action, keys)


def mailbox_key(email: str) -> str:
    """What an e-mail address counts as: itself, trimmed and in lower case (the cache stores a hash)."""
    return f"mailbox:{email.strip().lower()}"


def check_mailbox(request: HttpRequest, email: str) -> Refusal | None:
    """Count one e-mail to ``email`` against the mailbox limits (per hour and per day, whatever endpoint
    sends it); a :class:`Refusal` if one of them is exceeded, and then the e-mail must not go."""
    key = mailbox_key(email)
    return _count(request, "mail", {"mailbox": key, "mailbox_day": key})


def _count(request: HttpRequest, action: str, keys: dict[str, str | None]) -> Refusal | None:
    rates = settings.ENROLL_RATE_LIMITS.get(action, {})
    for scope, key in keys.items():
        rate = rates.get(scope)
        if not rate or key is None:
            continue
        usage = get_usage(
            request,
            group=f"enroll.{action}.{scope}",
            key=lambda _group, _request, key=key: key,
            rate=rate,
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            # django-ratelimit's window still holds at its last second (time_left == 0): one more.
            return Refusal(action=action, scope=scope, retry_after=max(1, int(usage["time_left"]) + 1))
    return None


#: The longest pasted text the 429 page shows back (a CSR or SPKAC is at most 16 KiB).
KEPT_MAX_CHARS = 16 * 1024


@dataclass(frozen=True)
class KeptInput:
    """What a refused form had pasted, shown back on the 429 page so that it is not lost."""

    field: str
    text: str
    device_name: str
    action: str  # where the page's form posts it again


def kept_input(request: HttpRequest, field: str | None) -> KeptInput | None:
    """The pasted ``field`` of a refused POST, if there is one worth keeping: never a private key (or
    anything that looks like one) and never more than :data:`KEPT_MAX_CHARS`."""
    if field is None or request.method != "POST":
        return None
    text = str(request.POST.get(field, "")).strip()
    if not text or len(text) > KEPT_MAX_CHARS or "PRIVATE KEY" in text.upper():
        return None
    device_name = str(request.POST.get("device_name", ""))[:KEPT_MAX_CHARS]
    return KeptInput(field=field, text=text, device_name=device_name, action=request.get_full_path())


def refused(
    request: HttpRequest, refusal: Refusal, *, as_json: bool = False, keep: str | None = None
) -> HttpResponse:
    """The 429 answer: a page (or ``{"ok": false, "error": ...}``) and ``Retry-After``. With ``keep``, the
    page shows that pasted field back in a form that sends it again (:func:`kept_input`)."""
    response: HttpResponse
    if as_json:
        response = JsonResponse(
            {"ok": False, "error": refusal.message, "retry_after": refusal.retry_after}, status=429
        )
    else:
        response = render(
            request,
            "accounts/ratelimited.html",
            {"refusal": refusal, "wait": wait_words(refusal.retry_after), "kept": kept_input(request, keep)},
            status=429,
        )
    response["Retry-After"] = str(refusal.retry_after)
    return response


def rate_limited(
    action: str, *, methods: tuple[str, ...] = ("POST",), as_json: bool = False, keep: str | None = None
) -> Callable[[View[P]], View[P]]:
    """View decorator: requests with one of ``methods`` count against ``action``'s limits. ``keep`` names
    a pasted field the 429 page shows back (:func:`refused`)."""

    def decorate(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
            if request.method in methods:
                refusal = check(request, action)
                if refusal is not None:
                    return refused(request, refusal, as_json=as_json, keep=keep)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


# --- lock-out ----------------------------------------------------------------------------------------


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """django-axes' answer to a locked-out login (AXES_LOCKOUT_CALLABLE): 429, a page, Retry-After."""
    cool_off = get_cool_off(request) or dt.timedelta(minutes=15)
    seconds = max(1, int(cool_off.total_seconds()))
    response = render(
        request,
        "accounts/locked_out.html",
        {"wait": wait_words(seconds), "failures": settings.AXES_FAILURE_LIMIT},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
