"""The HTTP protocol the gateway is served with: uvicorn's httptools protocol, with a
response's head sent together with its body.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two ``send``
system calls for every JSON answer. On a loopback or LAN peer each one costs as much as a
good part of the relay's own work (the kernel runs the receiving side's TCP path in the
sender's call), so the head is held until the next write, which takes it along (the body
of a JSON answer, the first chunk of a stream), or until the running step of the event
loop ends (``call_soon``: a stream whose first chunk is not ready yet still shows its
headers at once). Nothing else is held. Measured in docs/decisions.md, "One write per
response".
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD = b"HTTP/1.1 "  # how every status line uvicorn writes begins


class CoalescingTransport:
    """A connection's transport that holds a response's head for the write after it."""

    __slots__ = ("transport", "loop", "head")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
        elif data.startswith(HEAD):
            self.head = data
            self.loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        head, self.head = self.head, None
        if head is not None and not self.transport.is_closing():
            self.transport.write(head)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()  # what was written goes out before the connection closes
        self.transport.close()

    def abort(self) -> None:
        self.head = None
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def __getattr__(self, name: str):  # everything else: the transport's own
        return getattr(self.transport, name)


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control and addresses: the real transport
        self.transport = CoalescingTransport(transport, self.loop)
