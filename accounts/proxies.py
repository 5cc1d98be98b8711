"""Trusted front servers (``ENROLL_TRUSTED_PROXIES``): whose forwarded headers count, and who the client is.

The one reader of the setting. Certificate login (:mod:`accounts.certlogin`), the forwarded
``X-Forwarded-For`` and ``X-Forwarded-Proto`` headers (:class:`TrustedProxyMiddleware`) and the rate
limits and lock-out (:func:`client_address`) all ask here, so they cannot disagree about a peer.

- **The setting**: IP addresses or networks of the TCP peer (``REMOTE_ADDR``), e.g.
  ``127.0.0.1,10.0.0.0/8,::1``, and ``unix`` for a Unix-socket peer (which has no address). A list or a
  comma-separated string. :func:`parse` reads it (ImproperlyConfigured, naming the entry, for anything
  else); :func:`current` parses the setting's value once and answers from then on.
- **IPv4-mapped IPv6 is IPv4**: a dual-stack socket reports an IPv4 peer as ``::ffff:127.0.0.1``. Such an
  address, in the setting or in a request, is the IPv4 address it maps: ``127.0.0.1`` trusts
  ``::ffff:127.0.0.1`` (and ``::ffff:127.0.0.1`` trusts ``127.0.0.1``), and ``::ffff:203.0.113.9`` is
  client ``203.0.113.9`` to the rate limits and the lock-out.
- **Trusted proxy** (:func:`is_trusted_proxy`): only the TCP peer decides; ``X-Forwarded-For`` never
  makes a peer trusted.
- **Client address** (:func:`client_address`): ``REMOTE_ADDR``; from a trusted proxy, the right-most
  ``X-Forwarded-For`` entry that is not itself a trusted proxy. ``"unknown"`` when there is none.
- **Scheme**: Django's ``request.scheme`` and ``request.is_secure()``. ``SECURE_PROXY_SSL_HEADER`` (set by
  ``enroll/settings.py`` when there are trusted proxies) believes ``X-Forwarded-Proto`` from anyone, so
  :class:`TrustedProxyMiddleware`, first in ``MIDDLEWARE``, drops that header, and ``X-Forwarded-For``,
  from every other peer.

Nothing here reads settings at import time: ``enroll/settings.py`` checks the environment with
:func:`parse` (a bad entry stops the start).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

#: The ``ENROLL_TRUSTED_PROXIES`` entry that trusts a peer without an address (a Unix-socket connection).
UNIX_SOCKET = "unix"
#: ``request.META`` keys of the forwarded headers believed only from a trusted proxy.
FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"
FORWARDED_PROTO = "HTTP_X_FORWARDED_PROTO"
#: The client address when there is none (a Unix-socket peer that is not trusted).
UNKNOWN = "unknown"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_ALL_IPV4 = ipaddress.IPv4Network("0.0.0.0/0")


# --- addresses and networks ---------------------------------------------------------------------------


def normalise_address(address: Address) -> Address:
    """``address``, or the IPv4 address an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_address(text: str | None) -> Address | None:
    """The (normalised) IP address in ``text``, or None for anything else: empty, a name, garbage."""
    if not text:
        return None
    try:
        return normalise_address(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def normalise_network(network: Network) -> tuple[Network, ...]:
    """The networks ``network`` stands for once IPv4-mapped addresses count as IPv4.

    An IPv6 network inside ``::ffff:0:0/96`` is that IPv4 network (``::ffff:10.0.0.0/104`` is
    ``10.0.0.0/8``); one around all of it (``::/0``) takes in every IPv4 address too.
    """
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if network.prefixlen >= _IPV4_MAPPED.prefixlen and mapped is not None:
            return (ipaddress.IPv4Network((mapped, network.prefixlen - _IPV4_MAPPED.prefixlen)),)
        if network.supernet_of(_IPV4_MAPPED):
            return (network, _ALL_IPV4)
    return (network,)


# --- the setting --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """``ENROLL_TRUSTED_PROXIES``, parsed: networks (IPv4-mapped ones as IPv4) and the Unix-socket entry."""

    networks: tuple[Network, ...] = ()
    unix_socket: bool = False

    def trusts_address(self, address: Address) -> bool:
        """Whether ``address`` is in one of the networks."""
        address = normalise_address(address)
        return any(address in network for network in self.networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (a ``REMOTE_ADDR``; empty or None for a Unix socket) is a trusted proxy."""
        if not peer:
            return self.unix_socket
        address = parse_address(peer)
        return address is not None and self.trusts_address(address)


def _entries(values: Iterable[object] | str) -> tuple[str, ...]:
    items = values.split(",") if isinstance(values, str) else values
    return tuple(text for text in (str(item).strip() for item in items) if text)


def parse(values: Iterable[object] | str) -> TrustedProxies:
    """``ENROLL_TRUSTED_PROXIES`` (a list, or one comma-separated string) as :class:`TrustedProxies`.

    Raises ImproperlyConfigured, naming the entry, for anything but an IP address, a network or ``unix``.
    """
    return _parse(_entries(values))


@functools.lru_cache(maxsize=8)
def _parse(entries: tuple[str, ...]) -> TrustedProxies:
    networks: list[Network] = []
    unix_socket = False
    for item in entries:
        if item.lower() == UNIX_SOCKET:
            unix_socket = True
            continue
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"ENROLL_TRUSTED_PROXIES: {item!r} is not an IP address or network ({exc}); "
                "write e.g. 127.0.0.1,10.0.0.0/8,::1 (or 'unix' for a Unix socket)."
            ) from None
        networks.extend(normalise_network(network))
    return TrustedProxies(networks=tuple(networks), unix_socket=unix_socket)


def current() -> TrustedProxies:
    """The setting now (tests and ``override_settings`` change it), parsed once per value."""
    return parse(getattr(settings, "ENROLL_TRUSTED_PROXIES", ()) or ())


# --- requests -----------------------------------------------------------------------------------------


def is_trusted_proxy(peer: str | None) -> bool:
    """Whether ``peer`` (a ``REMOTE_ADDR``; empty or None for a Unix socket) is one of the trusted proxies."""
    return current().trusts(peer)


def _peer(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "")


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether ``request`` came from a trusted proxy: its TCP peer, never ``X-Forwarded-For``."""
    return is_trusted_proxy(_peer(request))


def client_address(request: HttpRequest) -> str:
    """The client's IP address (IPv4-mapped ones as IPv4): ``REMOTE_ADDR``, or, from a trusted proxy, the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.

    ``"unknown"`` when there is none (a Unix-socket peer that is not trusted, or forwarded nonsense).
    """
    proxies = current()
    peer = _peer(request)
    if proxies.trusts(peer):
        forwarded = str(request.META.get(FORWARDED_FOR, ""))
        for entry in reversed(forwarded.split(",")):
            address = parse_address(entry)
            if address is None:
                break  # not an address: the chain from here on is not the proxies' doing
            if not proxies.trusts_address(address):
                return str(address)
    address = parse_address(peer)
    return UNKNOWN if address is None else str(address)


class TrustedProxyMiddleware:
    """Drops ``X-Forwarded-For`` and ``X-Forwarded-Proto`` unless the peer is a trusted proxy.

    First in ``MIDDLEWARE``: Django's ``SECURE_PROXY_SSL_HEADER`` believes the header from anyone; this
    makes it (and :func:`client_address`) believe only ``ENROLL_TRUSTED_PROXIES``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not from_trusted_proxy(request):
            request.META.pop(FORWARDED_FOR, None)
            request.META.pop(FORWARDED_PROTO, None)
        return self.get_response(request)
