"""The protocol the gateway is served with (gateway_project.server): what one loop step
writes leaves in one write to the socket, in order, and nothing written is lost on close."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.server import ServerState

from gateway_project.workers import SERVER_OPTIONS

REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Transport(asyncio.Transport):
    """The socket's side: every write the protocol makes, as it makes it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def json_app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def stream_app(scope, receive, send):
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    for n in range(3):
        await send({"type": "http.response.body", "body": b"data: %d\n\n" % n, "more_body": True})
        await asyncio.sleep(0.01)  # each chunk in a later loop step
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def serve(app, data: bytes, *, until=lambda transport: False) -> Transport:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **SERVER_OPTIONS)
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if until(transport):
            break
    return protocol, transport


def test_a_json_answer_leaves_in_one_write():
    _, transport = asyncio.run(serve(json_app, REQUEST, until=lambda t: t.writes))
    assert len(transport.writes) == 1  # uvicorn alone writes the headers and the body apart
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 11" in head
    assert body == b'{"ok":true}'


def test_a_stream_sends_each_chunk_as_it_comes_and_in_order():
    done = b"0\r\n\r\n"
    _, transport = asyncio.run(
        serve(stream_app, REQUEST, until=lambda t: t.writes and t.writes[-1].endswith(done))
    )
    # the headers with the first chunk, then one write per chunk
    assert len(transport.writes) == 4
    wire = b"".join(transport.writes)
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n")
    assert wire.index(b"data: 0") < wire.index(b"data: 1") < wire.index(b"data: 2") < wire.index(done)


def test_headers_leave_at_once_when_the_first_chunk_is_late():
    async def slow_first_chunk(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.5)  # a model thinking before its first token
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    async def run():
        protocol, transport = await serve(slow_first_chunk, REQUEST, until=lambda t: t.writes)
        return list(transport.writes)

    writes = asyncio.run(run())
    assert (
        len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")
    )


def test_closing_sends_what_was_written_first():
    async def run():
        protocol, transport = await serve(json_app, b"")
        protocol.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        protocol.transport.close()  # in the same step: the write must not be lost
        return transport

    transport = asyncio.run(run())
    assert transport.writes == [b"HTTP/1.1 400 Bad Request\r\n\r\n"] and transport.closed
