"""GET / and HEAD /: clients (Claude Code among them) probe the base URL before they start;
answer with where things are, without authentication."""

from __future__ import annotations

import orjson

from ..http import Context
from ..protocols.openai import OPENAI
from . import Doc, Endpoint

ROOT = orjson.dumps(
    {
        "object": "gateway",
        "status": "ok",
        "api": "/v1",
        "docs": "/api/docs/",
        "dashboard": "/dashboard/",
        "health": "/health",
    }
)


async def root(ctx: Context, relay) -> None:
    await ctx.respond(200, ROOT)


ENDPOINTS = [
    Endpoint(
        "/",
        "GET",
        OPENAI,
        handle=root,
        authenticated=False,
        also=("HEAD",),
        doc=Doc(
            "gateway_root",
            "Where things are (clients probe the base URL; HEAD works too)",
            "relay: models",
            "GatewayRoot",
            "Links to the API, the docs and the dashboard.",
        ),
    )
]

SCHEMAS: dict[str, dict] = {
    "GatewayRoot": {
        "type": "object",
        "properties": {
            name: {"type": "string"} for name in ("object", "status", "api", "docs", "dashboard", "health")
        },
    }
}
