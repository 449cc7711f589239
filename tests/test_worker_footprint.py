"""A worker that relays and answers probes does not load the management API, the console
or the outbound fetcher's HTTP library (~30 MB of each worker's memory, docs/decisions.md
"Per-worker memory"); the first request that needs them loads them and is answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# a fresh interpreter: the test process itself has imported everything long ago
SCRIPT = r"""
import asyncio, json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings"
from gateway_project.asgi import application

# the apps' packages themselves are loaded by django.setup(); their modules are the weight
HEAVY = (
    "rest_framework.views", "rest_framework.fields", "drf_spectacular.openapi", "aiohttp",
    "gateway_project.console_urls",
)


async def get(path):
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }
    sent, bodies = [], [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():  # the body once, then no disconnect for as long as it takes
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


async def main():
    seen = {}
    for path in ("/health", "/metrics", "/v1/models", "/", "/favicon.ico", "/health/"):
        seen[path] = await get(path)
    seen["loaded_before"] = [m for m in HEAVY if m in sys.modules]
    seen["/api/docs/"] = await get("/api/docs/")
    seen["loaded_after"] = [m for m in HEAVY if m in sys.modules]
    print(json.dumps(seen))


asyncio.run(main())
"""


def test_probes_and_relay_paths_leave_the_management_api_unloaded(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["/health"] == 200
    assert seen["/metrics"] == 403  # neither a token nor a network configured: refused, answered
    assert seen["/v1/models"] == 401  # the relay answered (no key)
    assert seen["/favicon.ico"] == 404 and seen["/health/"] == 404  # a 404 does not load the console
    assert seen["loaded_before"] == []
    # the first request that needs the management API loads it, and is answered
    assert seen["/api/docs/"] == 200
    assert {"rest_framework.views", "drf_spectacular.openapi", "gateway_project.console_urls"} <= set(
        seen["loaded_after"]
    )
