"""GET /v1/usage and the OpenAI-style billing routes chat front-ends query: reports for
the key's owner, read from the settled usage (not on the inference path)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs

import orjson
from django.conf import settings

from billing import reports
from core.money import from_nanos

from ..db import db_async
from ..errors import RelayError
from ..http import Context
from ..protocols.openai import OPENAI
from . import Doc, Endpoint


def _dates(ctx: Context, default_days: int | None = None) -> tuple[date, date]:
    query = parse_qs(ctx.scope.get("query_string", b"").decode("latin-1"))
    today = datetime.now(UTC).date()
    default_start = today - timedelta(days=default_days - 1) if default_days else today.replace(day=1)
    try:
        start = date.fromisoformat(query["start_date"][0]) if "start_date" in query else default_start
        end = date.fromisoformat(query["end_date"][0]) if "end_date" in query else today
    except ValueError:
        raise RelayError(
            400, "start_date and end_date must be dates such as 2026-01-31.", param="start_date"
        ) from None
    if end < start:
        raise RelayError(400, "end_date is before start_date.", param="end_date")
    if (end - start).days > 366:
        raise RelayError(400, "The period may span at most 366 days.", param="start_date")
    return start, end


async def usage(ctx: Context, relay) -> None:
    """GET /v1/usage: this key's requests, tokens and cost per model over a period."""
    start, end = _dates(ctx)
    report = await db_async(reports.key_usage)(key_id=ctx.key.id, start=start, end=end)
    body = {
        "object": "usage",
        "key": ctx.key.prefix,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "currency": settings.BILLING_CURRENCY,
        **report,
    }
    await ctx.respond(200, orjson.dumps(body))


def _subscription_sync(key_id: int) -> tuple[int, int, int | None, float | None]:
    from keys.models import APIKey

    row = APIKey.objects.select_related("user").get(pk=key_id)
    expires = row.expires_at.timestamp() if row.expires_at else None
    return row.user.balance + row.user.credit_limit, row.spent, row.budget, expires


async def billing_subscription(ctx: Context, relay) -> None:
    """GET /v1/dashboard/billing/subscription, as chat front-ends query it: they show
    hard_limit_usd minus the usage reported by .../usage as the remaining balance."""
    available, spent, budget, expires = await db_async(_subscription_sync)(ctx.key.id)
    if budget is not None:
        hard = budget
        available = min(available, budget - spent)
    else:
        hard = available + spent
    hard_usd = float(from_nanos(hard))
    body = {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": hard_usd,
        "hard_limit_usd": hard_usd,
        "system_hard_limit_usd": hard_usd,
        "access_until": int(expires or 0),
        "remaining_usd": float(from_nanos(available)),
    }
    await ctx.respond(200, orjson.dumps(body))


async def billing_usage(ctx: Context, relay) -> None:
    """GET /v1/dashboard/billing/usage: total_usage in cents. Without dates it is the key's
    whole spending, which is what the subscription's hard limit is measured against."""
    query = ctx.scope.get("query_string", b"")
    if b"start_date" in query or b"end_date" in query:
        start, end = _dates(ctx, default_days=100)
        cost = await db_async(reports.key_cost_between)(key_id=ctx.key.id, start=start, end=end)
    else:
        cost = (await db_async(_subscription_sync)(ctx.key.id))[1]
    await ctx.respond(200, orjson.dumps({"object": "list", "total_usage": float(from_nanos(cost) * 100)}))


DATES = tuple(
    {"name": name, "in": "query", "required": False, "schema": {"type": "string", "format": "date"}}
    for name in ("start_date", "end_date")
)


ENDPOINTS = [
    Endpoint(
        "/v1/usage",
        "GET",
        OPENAI,
        handle=usage,
        doc=Doc(
            "relay_usage",
            "This key's requests, tokens and cost per model over a period",
            "relay: usage",
            "RelayUsage",
            "The usage.",
            parameters=DATES,
        ),
    ),
    Endpoint(
        "/v1/dashboard/billing/subscription",
        "GET",
        OPENAI,
        handle=billing_subscription,
        doc=Doc(
            "relay_billing_subscription",
            "OpenAI-style billing subscription: hard_limit_usd minus usage is what is left",
            "relay: usage",
            "BillingSubscription",
            "The limits.",
        ),
    ),
    Endpoint(
        "/v1/dashboard/billing/usage",
        "GET",
        OPENAI,
        handle=billing_usage,
        doc=Doc(
            "relay_billing_usage",
            "OpenAI-style billing usage in cents (all time without dates)",
            "relay: usage",
            "BillingUsage",
            "The usage.",
            parameters=DATES,
        ),
    ),
]


# --- OpenAPI ----------------------------------------------------------------------------

_USAGE_TOTALS = {
    "type": "object",
    "properties": {
        **{name: {"type": "integer"} for name in (
            "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"
        )},
        "cost": {"type": "string", "description": "Decimal amount, e.g. 0.000021000"},
    },
}  # fmt: skip
SCHEMAS: dict[str, dict] = {
    "RelayUsage": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["usage"]},
            "key": {"type": "string", "description": "The key's prefix."},
            "start_date": {"type": "string", "format": "date"},
            "end_date": {"type": "string", "format": "date"},
            "currency": {"type": "string"},
            "total": _USAGE_TOTALS,
            "data": {
                "type": "array",
                "items": {"allOf": [_USAGE_TOTALS, {"properties": {"model": {"type": "string"}}}]},
            },
        },
    },
    "BillingSubscription": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["billing_subscription"]},
            "has_payment_method": {"type": "boolean"},
            "soft_limit_usd": {"type": "number"},
            "hard_limit_usd": {"type": "number"},
            "system_hard_limit_usd": {"type": "number"},
            "access_until": {"type": "integer"},
            "remaining_usd": {"type": "number"},
        },
    },
    "BillingUsage": {
        "type": "object",
        "properties": {"object": {"type": "string"}, "total_usage": {"type": "number"}},
    },
}
