"""ASGI plumbing for the relay: the request context, body reading, responses."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.logging import new_request_id

from .conf import HOT
from .config import KeyInfo
from .errors import RelayError
from .protocols import Protocol
from .protocols.openai import OPENAI


class ClientGone(Exception):
    """The client disconnected before we answered."""


@dataclass(slots=True)
class Context:
    scope: dict
    receive: object
    send: object
    method: str
    path: str
    headers: dict[bytes, bytes]
    request_id: str
    client_ip: str | None
    protocol: Protocol = OPENAI  # the endpoint's dialect: its error shapes
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    key: KeyInfo | None = None
    request_bytes: int = 0
    response_started: bool = False
    response_ended: bool = False  # the last byte of the response was handed to the server
    response_bytes: int = 0
    extra_headers: tuple = ()  # the pipeline's notes on every response (a lowered max_tokens)

    @classmethod
    def from_scope(cls, scope: dict, receive, send) -> Context:
        headers = dict(scope["headers"])
        client = scope.get("client")
        ip = client[0] if client else None
        if HOT.TRUST_X_FORWARDED_FOR:
            forwarded = headers.get(b"x-forwarded-for")
            if forwarded:
                ip = forwarded.split(b",")[0].strip().decode("latin-1") or ip
        return cls(
            scope=scope,
            receive=receive,
            send=send,
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            # always our own: the id is the request's billing key (one charge per id), so a
            # client's X-Request-ID must not choose it (a reused one would go unbilled)
            request_id=new_request_id(),
            client_ip=ip,
        )

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    # --- reading ------------------------------------------------------------------------

    async def read_body(self) -> bytes:
        limit = HOT.RELAY_MAX_BODY_BYTES
        declared = self.headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise RelayError(
                        413, f"Request body exceeds the limit of {limit} bytes.", code="body_too_large"
                    )
            except ValueError:
                raise RelayError(400, "Invalid Content-Length header.") from None
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body = message.get("body", b"")
            if body:
                size += len(body)
                if size > limit:
                    raise RelayError(
                        413, f"Request body exceeds the limit of {limit} bytes.", code="body_too_large"
                    )
                chunks.append(body)
            if not message.get("more_body"):
                break
        self.request_bytes = size
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # --- writing ------------------------------------------------------------------------

    def base_headers(self, content_type: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", content_type),
            (b"x-request-id", self.request_id.encode()),
            *self.extra_headers,
        ]

    async def respond(
        self, status: int, body: bytes, *, content_type: bytes = b"application/json", headers=()
    ) -> None:
        response_headers = self.base_headers(content_type)
        response_headers.append((b"content-length", str(len(body)).encode()))
        response_headers.extend(headers)
        self.response_started = True
        await self.send({"type": "http.response.start", "status": status, "headers": response_headers})
        await self.send({"type": "http.response.body", "body": body})
        self.response_bytes += len(body)

    async def start_stream(self, headers=()) -> None:
        response_headers = self.base_headers(b"text/event-stream; charset=utf-8")
        response_headers.append((b"cache-control", b"no-cache"))
        response_headers.append((b"x-accel-buffering", b"no"))
        response_headers.extend(headers)
        self.response_started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": response_headers})

    async def stream_chunk(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})
        self.response_bytes += len(data)

    async def end_stream(self, data: bytes = b"") -> None:
        self.response_ended = True
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
        self.response_bytes += len(data)

    async def error(self, exc: RelayError) -> None:
        await self.respond(exc.status, self.protocol.error_body(exc), headers=exc.headers)
