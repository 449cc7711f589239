"""Minimal raw-ASGI reverse proxy: the ceiling for any Python gateway.

It forwards ``POST /v1/chat/completions`` to ``$BENCH_UPSTREAM`` (a base URL
such as ``http://127.0.0.1:8080``; the request path is appended) through one
shared ``aiohttp.ClientSession`` per worker and returns the upstream body.
Streaming (``text/event-stream``) responses are relayed chunk by chunk.
No framework, no auth, no database: whatever the gateway costs on top of this
is the price of its own work.

Run (bench/run.py does this)::

    BENCH_UPSTREAM=http://127.0.0.1:8080 uvicorn bench.passthrough:app \\
        --workers 2 --loop uvloop --http httptools --no-access-log \\
        --log-level warning
"""

from __future__ import annotations

import os

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8080").rstrip("/")
# "http://host:port/v1" is accepted too: the request path already has /v1.
UPSTREAM = UPSTREAM.removesuffix("/v1")

_session: aiohttp.ClientSession | None = None


def _get_session() -> aiohttp.ClientSession:
    global _session
    if _session is None or _session.closed:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=None)
        _session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
    return _session


async def _lifespan(receive, send) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _get_session()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
                _session = None
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _simple(send, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def app(scope, receive, send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind != "http":
        return

    path = scope["path"]
    method = scope["method"]
    if path == "/health" and method == "GET":
        await _simple(send, 200, b"ok")
        return
    if path != "/v1/chat/completions":
        await _simple(send, 404, b"not found")
        return
    if method != "POST":
        await _simple(send, 405, b"method not allowed")
        return

    body = await _read_body(receive)
    headers = {"Content-Type": "application/json"}
    for name, value in scope["headers"]:
        if name == b"authorization":
            headers["Authorization"] = value.decode("latin-1")
            break

    try:
        async with _get_session().post(UPSTREAM + path, data=body, headers=headers) as resp:
            ctype = resp.headers.get("Content-Type", "application/json").encode("latin-1")
            if ctype.startswith(b"text/event-stream"):
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": [
                            (b"content-type", ctype),
                            (b"cache-control", b"no-cache"),
                        ],
                    }
                )
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            payload = await resp.read()
            status = resp.status
    except aiohttp.ClientError as exc:
        await _simple(send, 502, f"upstream error: {exc}".encode())
        return

    await _simple(send, status, payload, ctype)
