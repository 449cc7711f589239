"""A minimal pipelining Redis client for the counter store's scripts on the request path.

redis-py's asyncio client (8.1, hiredis parser) spends 100 to 145 us of CPU per EVALSHA
of the relay's scripts on this machine when commands go one at a time, 45 to 95 us with
32 callers, pipelined or not (its connection pool, command objects, a response callback
and an awaited read with a timeout per reply); this client spends 35 to 39 us and 11 to 12 us
(bench/redis_client.py, 2026-12-01; docs/decisions.md, "Redis client: measured again").
With leases a busy key rarely reaches Redis, but a key with a small concurrency limit, or
near any limit, reserves per request: one or two calls each. The relay's hot path needs
only EVALSHA in batches, so this speaks RESP directly: commands are packed by hiredis and
written together, replies are parsed by hiredis' C reader and handed straight to the
callers' futures, on one connection per worker (Redis answers in order, so one connection
carries every pipelined request of the worker).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import unquote, urlparse

import hiredis


class RespError(Exception):
    pass


class Script:
    """A Lua script called by SHA-1, loaded again with EVAL if Redis forgot it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        # (future, script or None, keys, args): the script lets a NOSCRIPT reply retry with EVAL
        self.waiters: deque[tuple] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.on_drain = None  # called once when every sent command has its reply

    def connection_made(self, transport) -> None:
        self.transport = transport

    def write(self, commands: list[tuple], entries: list[tuple]) -> None:
        self.waiters.extend(entries)
        self.transport.write(b"".join([hiredis.pack_command(command) for command in commands]))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                if not self.waiters and self.on_drain is not None:
                    callback, self.on_drain = self.on_drain, None
                    callback()
                return
            future, script, keys, args = self.waiters.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                if script is not None and str(reply).startswith("NOSCRIPT"):
                    self.write([("EVAL", script.source, len(keys), *keys, *args)], [(future, None, (), ())])
                else:
                    future.set_exception(RespError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.closed = True
        # fail the callers first, so their callbacks run before the next batch is sent
        error = ConnectionError(f"redis connection lost: {exc}" if exc else "redis connection closed")
        while self.waiters:
            future = self.waiters.popleft()[0]
            if not future.done():
                future.set_exception(error)
        if self.on_drain is not None:
            callback, self.on_drain = self.on_drain, None
            asyncio.get_running_loop().call_soon(callback)


# seconds: a batch unanswered this long drops the connection (a stalled Redis or a half-open
# TCP connection), so requests get an error instead of waiting forever; Redis answers the
# relay's batches in well under a millisecond
REPLY_TIMEOUT = 3.0


class RespClient:
    def __init__(self, url: str, *, scripts: tuple = ()) -> None:
        self.url = url
        self.scripts = scripts  # loaded on connect
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Lock | None = None

    @property
    def ready(self) -> bool:
        return self.protocol is not None and not self.protocol.closed

    async def connect(self) -> None:
        if self.ready:
            return
        if self.connecting is None:
            self.connecting = asyncio.Lock()
        async with self.connecting:
            if not self.ready:
                self.protocol = await self._open()

    async def _open(self) -> _Protocol:
        parsed = urlparse(self.url)
        loop = asyncio.get_running_loop()
        if parsed.scheme == "unix":
            _, protocol = await loop.create_unix_connection(_Protocol, parsed.path)
        else:
            context = ssl.create_default_context() if parsed.scheme == "rediss" else None
            _, protocol = await loop.create_connection(
                _Protocol, parsed.hostname or "127.0.0.1", parsed.port or 6379, ssl=context
            )
        setup = []
        if parsed.password:
            password = unquote(parsed.password)
            user = unquote(parsed.username) if parsed.username else None
            setup.append(("AUTH", user, password) if user else ("AUTH", password))
        db = (parsed.path or "/").strip("/") or "0"
        if db != "0":
            setup.append(("SELECT", db))
        setup += [("SCRIPT", "LOAD", script.source) for script in self.scripts]
        if setup:
            futures = [loop.create_future() for _ in setup]
            protocol.write(setup, [(future, None, (), ()) for future in futures])
            try:
                for future in futures:
                    await asyncio.wait_for(future, REPLY_TIMEOUT)  # RespError: wrong password or db
            except BaseException:
                protocol.transport.abort()
                for future in futures:  # the others failed with it: their errors are this one
                    if future.done() and not future.cancelled():
                        future.exception()  # retrieved (else asyncio logs each at collection)
                    else:
                        future.cancel()
                raise
        return protocol

    def send(self, calls: list[tuple]) -> None:
        """Write ``(future, script, keys, args)`` calls as EVALSHA commands, now. The
        connection must be ready (``connect``). If the batch's last reply is not in
        within ``REPLY_TIMEOUT``, the connection is dropped: every caller gets an error."""
        protocol = self.protocol
        protocol.write(
            [("EVALSHA", script.sha, len(keys), *keys, *args) for _, script, keys, args in calls], calls
        )
        last = calls[-1][0]
        timer = asyncio.get_running_loop().call_later(REPLY_TIMEOUT, self._overdue, protocol, last)
        last.add_done_callback(lambda _: timer.cancel())

    @staticmethod
    def _overdue(protocol: _Protocol, last: asyncio.Future) -> None:
        if not last.done() and protocol.transport is not None:
            protocol.transport.abort()  # connection_lost fails every waiter

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
