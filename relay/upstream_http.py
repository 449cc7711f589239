"""The relay's HTTP/1.1 client for provider calls: pooled keep-alive connections, the
response parsed by httptools (llhttp, the parser uvicorn uses).

Measured against aiohttp's ClientSession on the bench's request (docs/decisions.md,
"Upstream client: a lean HTTP/1.1 client on the hot path"): ~11 us of CPU per request
instead of ~74 us, and aiohttp was a third of the gateway's own work per request. What
the relay needs from a client is small: one request written at once, a status, headers,
a body read whole or chunk by chunk as it arrives (streams), keep-alive reuse, TLS,
connect and read timeouts, gzip/deflate. Everything else an outbound call may need
(proxies, redirects, cookies, address rules for user-given URLs) is not the relay's: those
calls (web search, Midjourney images and hooks) keep aiohttp through core/outbound.

Errors are the ones the forwarder already treats as an upstream failure: ``OSError``
subclasses (refused, reset, TLS, a malformed response: ``UpstreamProtocolError``) and
``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

USER_AGENT = "ai-gateway/relay"
KEEPALIVE_SECONDS = 60.0  # idle connections are closed after this
MAX_IDLE_PER_ORIGIN = 1024
PAUSE_BYTES = 256 * 1024  # a stream's unread bytes at which its socket stops being read, until they are
MAX_HEAD_BYTES = 64 * 1024
DNS_TTL = 300.0  # seconds a host's addresses are reused for new connections


class UpstreamProtocolError(ConnectionError):
    """The upstream's answer is not HTTP/1.1 the client can read, or it closed early."""


Origin = tuple[str, str, int]  # (scheme, host, port): connections are pooled per origin


@lru_cache(maxsize=4096)
def _parse(url: str) -> tuple[Origin, bytes, bytes]:
    """(origin, request target, Host header value) of an absolute http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise ValueError("credentials in an upstream URL are not sent; use the provider's key")
    host = parts.hostname
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), target.encode("utf-8"), host_header.encode("idna")


def _check(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError("a header name or value holds a line break")
    return text


@lru_cache(maxsize=1024)
def _header_lines(items: tuple[tuple[str, str], ...]) -> bytes:
    """The header lines of a request's headers, with the client's User-Agent unless one
    is given (cached: a provider's requests carry the same few headers)."""
    lines = []
    agent = False
    for name, value in items:
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # the client's own
        agent = agent or lowered == "user-agent"
        lines.append(f"{_check(name)}: {_check(value)}\r\n")
    if not agent:
        lines.append(f"User-Agent: {USER_AGENT}\r\n")
    return "".join(lines).encode("utf-8")


class UpstreamResponse:
    """An upstream's answer: ``status`` and ``headers`` (lower-case names) once its head
    arrived; the body with ``read()`` or, as it arrives, ``content.iter_any()``. Give the
    connection back with ``release()`` (kept alive when the body was read to its end) or
    drop it with ``close()``."""

    __slots__ = (
        "status",
        "headers",
        "_connection",
        "_client",
        "_chunks",
        "_buffered",
        "_waiter",
        "_complete",
        "_error",
        "_decoder",
        "_read_timeout",
        "_last_data",
        "_timer",
        "_paused",
        "_keep_alive",
        "_done_with",
    )

    def __init__(self, client: UpstreamClient, connection: _Connection, read_timeout: float | None) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection = connection
        self._client = client
        # a list, not a deque: an empty deque holds a 64-slot block (~0.6 KB per open stream)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._decoder = None
        self._read_timeout = read_timeout
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._keep_alive = False
        self._done_with = False

    @property
    def content(self) -> UpstreamResponse:  # aiohttp's spelling: response.content.iter_any()
        return self

    # --- from the connection -------------------------------------------------------------

    def _head(self, status: int, headers: dict[str, str], keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self._keep_alive = keep_alive
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            self._fail(UpstreamProtocolError(f"unsupported content-encoding {encoding!r}"))
            return
        self._wake()

    def _body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(UpstreamProtocolError(f"undecodable body: {exc}"))
                return
            if not data:
                return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > PAUSE_BYTES and not self._paused:
            self._paused = True
            self._connection.pause()
        self._wake()

    def _end(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                self._fail(UpstreamProtocolError(f"undecodable body: {exc}"))
                return
            if tail:
                self._chunks.append(tail)
        self._complete = True
        self._stop_timer()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        self._keep_alive = False
        self._stop_timer()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- waiting ---------------------------------------------------------------------------

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = self._client.loop
        self._waiter = waiter = loop.create_future()
        if self._read_timeout is not None:
            # the read timeout counts while nothing is buffered and the caller waits (a
            # slow client that paused the reading does not run it down)
            self._last_data = loop.time()
            if self._timer is None:
                self._timer = loop.call_at(self._last_data + self._read_timeout, self._on_timer)
        try:
            await waiter
        except asyncio.CancelledError:
            self._waiter = None
            raise
        if self._error is not None:
            raise self._error

    def _on_timer(self) -> None:
        self._timer = None
        if self._complete or self._error is not None or self._waiter is None:
            return  # done, or nobody waits: the next wait arms it again
        deadline = self._last_data + self._read_timeout
        loop = self._client.loop
        if loop.time() >= deadline:
            self._fail(TimeoutError(f"no data from the upstream for {self._read_timeout:g} s"))
            self._connection.close()
        else:  # data came since: wait for the rest of the gap
            self._timer = loop.call_at(deadline, self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- the caller's side ---------------------------------------------------------------

    async def read(self) -> bytes:
        while not self._complete:
            await self._wait()
        if self._paused:
            self._resume()
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    async def iter_any(self):
        """What arrived since the last piece (decoded), as soon as it arrives, until the end."""
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused:
                    self._resume()
                yield data
            elif self._complete:
                return
            else:
                await self._wait()

    def _resume(self) -> None:
        self._paused = False
        self._connection.resume()

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool when the whole
        body was read and the upstream keeps it alive, else it is closed."""
        if self._done_with:
            return
        self._done_with = True
        self._stop_timer()
        if self._complete and self._keep_alive and self._error is None and not self._chunks:
            self._client._put(self._connection)
        else:
            self._connection.close()

    def close(self) -> None:
        """Drop the connection now (the upstream stops sending)."""
        if self._done_with:
            return
        self._done_with = True
        self._stop_timer()
        self._connection.close()


class _Connection(asyncio.Protocol):
    __slots__ = (
        "origin",
        "transport",
        "parser",
        "response",
        "closed",
        "idle_since",
        "_headers",
        "_head_size",
    )

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: dict[str, str] = {}
        self._head_size = 0

    # --- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for on an idle connection
            self.close()
            return
        response._last_data = response._client.loop.time()
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # httptools' errors and those of our callbacks
            response._fail(UpstreamProtocolError(f"malformed response from the upstream: {exc}"))
            self.close()

    def eof_received(self):
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc) -> None:
        self.closed = True
        response = self.response
        if response is None or response._complete:
            return
        if response.status and self._ends_at_close():
            response._end()  # a body delimited by the connection's end
            return
        message = "the upstream closed the connection" + (f" ({exc})" if exc else "")
        response._fail(UpstreamProtocolError(message) if exc is None else ConnectionResetError(message))

    def _ends_at_close(self) -> bool:
        headers = self.response.headers
        return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = {}
        self._head_size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD_BYTES:
            raise UpstreamProtocolError("response head too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        self.response._head(status, self._headers, self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.response.status:
            self.response._body(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response.status:
            response._end()

    # --- pool ------------------------------------------------------------------------------

    def pause(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamClient:
    """Connections per origin, reused while the upstream keeps them alive."""

    def __init__(
        self, *, keepalive: float = KEEPALIVE_SECONDS, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.keepalive = keepalive
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._dns: dict[tuple[str, int], tuple[float, object]] = {}
        self._sweeper = self.loop.call_later(keepalive, self._sweep)
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; returns once the response's status and headers arrived."""
        origin, target, host = _parse(url)
        body = data or b""
        head = b"".join(
            (
                method.encode("ascii"),
                b" ",
                target,
                b" HTTP/1.1\r\nHost: ",
                host,
                b"\r\n",
                _header_lines(tuple(headers.items()) if headers else ()),
                b"Content-Length: %d\r\n" % len(body) if body or method in ("POST", "PUT", "PATCH") else b"",
                b"Accept-Encoding: gzip, deflate\r\n\r\n",
            )
        )
        connection = self._take(origin)
        if connection is None:
            connection = await self._connect(origin, connect_timeout)
        response = UpstreamResponse(self, connection, read_timeout)
        connection.response = response
        transport = connection.transport
        if len(body) <= 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        try:
            while not response.status:
                await response._wait()
        except BaseException:
            response.close()
            raise
        return response

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        async with asyncio.timeout(timeout):
            addresses = await self._resolve(host, port)
            error: OSError | None = None
            for family, address in addresses:  # in the resolver's order, the next on failure
                try:
                    _, connection = await self.loop.create_connection(
                        lambda: _Connection(origin),
                        address[0],
                        port,
                        family=family,
                        ssl=tls,
                        server_hostname=host if tls is not None else None,
                    )
                    return connection
                except OSError as exc:
                    error = exc
            raise error or OSError(f"no address for {host}")

    async def _resolve(self, host: str, port: int) -> list[tuple[int, tuple]]:
        """The host's addresses, cached for ``DNS_TTL`` seconds: a burst of new streams
        does not queue thousands of lookups on the thread pool; one lookup per host is
        shared by the connections that wait for it."""
        key = (host, port)
        now = time.monotonic()
        cached = self._dns.get(key)
        if cached is not None:
            expires, addresses = cached
            if isinstance(addresses, asyncio.Future):
                return await asyncio.shield(addresses)
            if expires > now:
                return addresses
        lookup = self.loop.create_future()
        self._dns[key] = (now + DNS_TTL, lookup)
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
            if not addresses:
                raise OSError(f"no address for {host}")
        except BaseException as exc:
            del self._dns[key]
            if not lookup.done():
                lookup.set_exception(exc if isinstance(exc, Exception) else OSError(str(exc)))
                lookup.exception()  # retrieved: nobody else may be waiting
            raise
        self._dns[key] = (now + DNS_TTL, addresses)
        lookup.set_result(addresses)
        return addresses

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        cutoff = time.monotonic() - self.keepalive
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if connection.closed:
                continue
            if connection.idle_since < cutoff:
                connection.close()
                continue
            return connection
        return None

    def _put(self, connection: _Connection) -> None:
        connection.response = None
        if self._closed or connection.closed:
            connection.close()
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _sweep(self) -> None:
        """Close connections idle longer than the keep-alive (a burst of streams leaves
        many behind)."""
        cutoff = time.monotonic() - self.keepalive
        for origin, idle in list(self._idle.items()):
            kept = []
            for connection in idle:
                if connection.closed:
                    continue
                if connection.idle_since < cutoff:
                    connection.close()
                else:
                    kept.append(connection)
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if not self._closed:
            self._sweeper = self.loop.call_later(self.keepalive / 2, self._sweep)

    async def close(self) -> None:
        self._closed = True
        self._sweeper.cancel()
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
