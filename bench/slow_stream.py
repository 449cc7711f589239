"""Slow streaming fake upstream for the streaming benchmark.

``POST /v1/chat/completions`` with ``"stream": true`` answers with an OpenAI
SSE stream: ``--chunks`` (default 40) content chunks ``--interval`` (default
0.5) seconds apart, a finish chunk, a usage chunk (``"choices": []``) when
``stream_options.include_usage`` is set, then ``data: [DONE]``.
Without ``stream`` it answers a fixed ``chat.completion`` JSON at once (used
by bench/run.py as a pre-flight check). ``GET /health`` answers 200.

    python bench/slow_stream.py --port 8090 [--chunks 40] [--interval 0.5] [--processes 2]

``--processes N`` forks N servers that share the port (SO_REUSEPORT: the kernel spreads the
connections over them), so that 10,000 streams x 2 chunks/s are not one event loop's work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from aiohttp import web

CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"word "},'
    b'"finish_reason":null}]}\n\n'
)
FINISH = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},'
    b'"finish_reason":"stop"}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
COMPLETION = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello from slow_stream."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}'
)


def usage_chunk(chunks: int) -> bytes:
    payload = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": chunks,
            "total_tokens": 3 + chunks,
        },
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def make_app(chunks: int, interval: float) -> web.Application:
    usage = usage_chunk(chunks)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        if not isinstance(body, dict) or not body.get("stream"):
            return web.Response(body=COMPLETION, content_type="application/json")

        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            for i in range(chunks):
                if i:
                    await asyncio.sleep(interval)
                await resp.write(CHUNK)
            await resp.write(FINISH)
            if include_usage:
                await resp.write(usage)
            await resp.write(DONE)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", completions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--processes", type=int, default=1, help="servers sharing the port")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog (capped by somaxconn)")
    args = parser.parse_args()
    for _ in range(args.processes - 1):
        if os.fork() == 0:  # a child serves too; the parent forks the others
            break
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        make_app(args.chunks, args.interval),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=args.backlog,
        reuse_port=args.processes > 1,
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
