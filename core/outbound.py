"""Outbound HTTP the gateway makes on others' behalf (crawler URLs a model asks for,
search backends, hooks): SSRF-safe by construction.

- http and https only;
- every address a host name resolves to is checked *after* resolution, inside the
  connector's resolver, so the address checked is the address connected to (no DNS
  rebinding window); IP literals, which aiohttp does not resolve, are checked before the
  request; loopback, private, link-local, multicast, reserved, unspecified and other
  non-global addresses are refused, IPv4 and IPv6 alike, IPv4-mapped/compatible IPv6
  judged by the IPv4 address they carry;
- redirects are followed here, one hop at a time (at most ``OUTBOUND_MAX_REDIRECTS``),
  each hop checked like the first;
- the body is capped (``OUTBOUND_MAX_BYTES``) and so is the whole exchange
  (``OUTBOUND_TIMEOUT`` seconds);
- ``OUTBOUND_ALLOWED_HOSTS`` (``host:port`` entries) lists the exceptions: self-hosted
  backends the operator chose, and loopback servers in tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from yarl import URL

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

# aiohttp is imported by the first fetch, not with this module: a relay worker that never
# fetches for others does not carry it (8 MB of a worker's memory, docs/decisions.md)

DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundRefused(Exception):
    """The URL may not be fetched (scheme, address, redirects, size)."""


class OutboundFailed(Exception):
    """The fetch failed on the network (connection, TLS, protocol); ``kind`` names the cause."""

    def __init__(self, cause: Exception) -> None:
        self.kind = type(cause).__name__
        super().__init__(f"{self.kind}: {cause}")


def failure_kind(exc: BaseException) -> str:
    """A short name for why a fetch failed, for messages shown to a model or a log."""
    return exc.kind if isinstance(exc, OutboundFailed) else type(exc).__name__


@dataclass(frozen=True, slots=True)
class FetchResult:
    url: str  # the final URL, after redirects
    status: int
    content_type: str
    body: bytes
    truncated: bool  # the body was longer than the cap and was cut


def _allowed_pairs(extra: Iterable[str] = ()) -> set[tuple[str, int]]:
    pairs = set()
    for entry in [*settings.OUTBOUND_ALLOWED_HOSTS, *extra]:
        entry = entry.strip().lower()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            continue  # host:port only: an entry without a port allows nothing
        pairs.add((host.strip("[]"), int(port)))
    return pairs


def is_public_address(address: str) -> bool:
    """Whether an IP address is one the gateway may connect to for others."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and ip in ipaddress.IPv6Network("::/96") and int(ip) > 1:
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # deprecated IPv4-compatible
        if mapped is not None:
            return is_public_address(str(mapped))
    return ip.is_global and not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class GuardedResolver:
    """Resolves with ``inner`` and refuses a name any of whose addresses is not public,
    unless ``host:port`` is allow-listed (aiohttp's resolver interface)."""

    def __init__(self, inner: AbstractResolver, allowed: set[tuple[str, int]]) -> None:
        self.inner = inner
        self.allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        results = await self.inner.resolve(host, port, family)
        if (host.lower(), port) in self.allowed:
            return results
        refused = [result["host"] for result in results if not is_public_address(result["host"])]
        if refused or not results:
            raise OutboundRefused(f"{host} resolves to an address the gateway does not fetch from")
        return results

    async def close(self) -> None:
        await self.inner.close()


def base_resolver() -> AbstractResolver:
    """The real DNS resolver (tests replace this function with a fake one)."""
    import aiohttp

    return aiohttp.ThreadedResolver()


def check_url(url: URL, allowed: set[tuple[str, int]]) -> None:
    """What can be refused before connecting: the scheme, and an IP-literal host."""
    if url.scheme not in DEFAULT_PORTS:
        raise OutboundRefused(f"only http and https URLs are fetched, not {url.scheme or 'none'!r}")
    host = (url.raw_host or "").lower().strip("[]")
    if not host:
        raise OutboundRefused("the URL has no host")
    port = url.port or DEFAULT_PORTS[url.scheme]
    if (host, port) in allowed:
        return
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: checked after resolution, by the resolver
    if not is_public_address(host):
        raise OutboundRefused(f"{host} is not an address the gateway fetches from")


def precheck(url: str) -> None:
    """``check_url`` with the configured allow-list, for a URL taken now and fetched later
    (a client's hook): raises ``OutboundRefused`` or ``ValueError``."""
    check_url(URL(url), _allowed_pairs())


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    data: bytes | None = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
    trusted: Iterable[str] = (),
) -> FetchResult:
    """GET (or ``method``, with ``data`` as the body) ``url`` under the outbound rules;
    ``trusted`` adds ``host:port`` entries to the allow-list for this call (e.g. the
    configured search backend). A 307/308 redirect sends the body again, others GET.

    Raises ``OutboundRefused`` for what the rules forbid, ``ValueError`` for a URL that
    cannot be fetched, ``OutboundFailed`` and ``TimeoutError`` for network failures."""
    import aiohttp

    try:
        return await _fetch(url, method, headers, params, data, timeout, max_bytes, trusted)
    except aiohttp.ClientError as exc:
        if isinstance(exc, ValueError):  # an invalid URL: the caller's input, not the network
            raise
        raise OutboundFailed(exc) from exc


async def _fetch(url, method, headers, params, data, timeout, max_bytes, trusted) -> FetchResult:
    import aiohttp

    allowed = _allowed_pairs(trusted)
    limit = max_bytes if max_bytes is not None else settings.OUTBOUND_MAX_BYTES
    total = timeout if timeout is not None else settings.OUTBOUND_TIMEOUT
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(base_resolver(), allowed), use_dns_cache=False, force_close=True
    )
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        async with asyncio.timeout(total):
            current = URL(url)
            if params:
                current = current.update_query(params)
            for _ in range(settings.OUTBOUND_MAX_REDIRECTS + 1):
                check_url(current, allowed)
                try:
                    response = await session.request(
                        method, current, headers=headers, data=data, allow_redirects=False
                    )
                except aiohttp.ClientConnectorError as exc:
                    if isinstance(exc.os_error, OutboundRefused):
                        raise exc.os_error from None
                    raise
                async with response:
                    location = response.headers.get("Location")
                    if response.status in (301, 302, 303, 307, 308) and location:
                        current = current.join(URL(location))
                        if response.status in (301, 302, 303) and method != "GET":
                            method, data = "GET", None  # as browsers do; 307/308 resend the body
                        continue
                    body = await response.content.read(limit + 1)
                    return FetchResult(
                        url=str(current),
                        status=response.status,
                        content_type=response.headers.get("Content-Type", ""),
                        body=body[:limit],
                        truncated=len(body) > limit,
                    )
            raise OutboundRefused(f"more than {settings.OUTBOUND_MAX_REDIRECTS} redirects")
