"""Turning a request into a reservation plan, and a refusal into the client's error."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.conf import settings

from billing.pricing import Price, token_cost
from quotas.amounts import quota_phrase
from quotas.counters import Check, Plan, Refusal
from quotas.periods import period_bounds

from .config import KeyInfo
from .errors import RelayError

IMAGE_TOKENS = 1000  # estimate per image part
CHARS_PER_TOKEN = 3  # conservative: real text averages about 4


def _text_chars(content) -> tuple[int, int]:
    """(characters of text, number of images) in a message content or block list."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("image_url", "image", "input_image", "document", "file"):
                images += 1
            elif isinstance(part.get("text"), str):
                chars += len(part["text"])
            elif "content" in part:
                more, more_images = _text_chars(part["content"])
                chars += more
                images += more_images
            elif kind in ("tool_use", "tool_result") or "input" in part:
                chars += len(str(part.get("input", "")))
    return chars, images


def estimate_prompt_tokens(body: dict) -> int:
    chars = images = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            more, more_images = _text_chars(message.get("content"))
            chars += more + 8
            images += more_images
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                chars += sum(len(str(call)) for call in calls)
    for name in ("system", "prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    chars += len(item)
                elif isinstance(item, int):
                    chars += CHARS_PER_TOKEN  # a token id
                else:
                    more, more_images = _text_chars([item])
                    chars += more
                    images += more_images
    if body.get("tools"):
        chars += len(str(body["tools"]))
    return chars // CHARS_PER_TOKEN + 1 + images * IMAGE_TOKENS


def estimate_completion_tokens(body: dict, request_type: str, model_max: int | None) -> int:
    if request_type == "embedding":
        return 0
    requested = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        requested = 16 if request_type == "completion" else (model_max or settings.RELAY_DEFAULT_MAX_TOKENS)
    n = body.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return requested * n


_PERIODS: dict[tuple, tuple[float, float]] = {}


def _period(period: str, reset_time, now: float) -> tuple[float, float]:
    """(start, end) epoch seconds of the quota period containing ``now`` (end 0.0 for
    lifetime), remembered until the period ends: datetime arithmetic once per period."""
    cache_key = (period, reset_time)
    cached = _PERIODS.get(cache_key)
    if cached is not None and cached[0] <= now and (not cached[1] or now < cached[1]):
        return cached
    start, end = period_bounds(period, datetime.fromtimestamp(now, tz=UTC), reset_time)
    bounds = (start.timestamp(), end.timestamp() if end is not None else 0.0)
    _PERIODS[cache_key] = bounds
    return bounds


_METRICS = {"requests": (1, "keep"), "tokens": (0, "tokens"), "cost": (0, "cost")}


def _limits(key: KeyInfo, now: float) -> tuple:
    """The key's counters in the current windows, worked out once per window and kept on
    the key: (valid until, checks whose amount is always 1, specs of the checks whose
    amount is the request's estimate of tokens or cost, and the usage event's quota list)."""
    cached = key.limits_cache
    if cached is not None and now < cached[0]:
        return cached
    minute = int(now // 60)
    minute_end = valid_until = (minute + 1) * 60.0
    fixed: list[Check] = []
    estimated: list[tuple] = []
    refs: list[list] = []
    if key.rpm_limit:
        fixed.append(
            Check("rpm", f"gw:rpm:k:{key.id}:{minute}", 1, key.rpm_limit, 120, 0, minute_end, "keep")
        )
    if key.user_rpm_limit:
        fixed.append(
            Check(
                "user_rpm",
                f"gw:rpm:u:{key.user_id}:{minute}",
                1,
                key.user_rpm_limit,
                120,
                0,
                minute_end,
                "keep",
            )
        )
    if key.tpm_limit:
        estimated.append(
            ("tpm", f"gw:tpm:k:{key.id}:{minute}", key.tpm_limit, 120, 0, minute_end, "tokens", None)
        )
    for quota in key.quotas:
        start_ts, end_ts = _period(quota.period, quota.reset_time, now)
        if end_ts:
            valid_until = min(valid_until, end_ts)
        ttl = int(end_ts - now) + 3600 if end_ts else 0
        seed = quota.used if quota.used_since == start_ts else 0
        amount, settle = _METRICS[quota.metric]
        counter = f"gw:q:{quota.id}:{int(start_ts)}"
        refs.append([quota.id, int(start_ts), settle])
        if settle == "keep":
            fixed.append(
                Check("quota", counter, amount, quota.limit, ttl, seed, end_ts, settle, quota_id=quota.id)
            )
        else:
            estimated.append(("quota", counter, quota.limit, ttl, seed, end_ts, settle, quota.id))
    cached = key.limits_cache = (valid_until, tuple(fixed), tuple(estimated), tuple(refs))
    return cached


def build_plan(
    *, rid: str, key: KeyInfo, body: dict, request_type: str, price: Price | None, model_max: int | None
) -> Plan:
    now = time.time()
    prompt = estimate_prompt_tokens(body)
    completion = estimate_completion_tokens(body, request_type, model_max)
    est_tokens = prompt + completion
    est_cost = token_cost(
        price, prompt_tokens=prompt, completion_tokens=completion, multiplier=key.multiplier
    )
    _, fixed, estimated, refs = _limits(key, now)
    checks = list(fixed)
    for kind, counter, limit, ttl, seed, reset_at, settle, quota_id in estimated:
        amount = est_tokens if settle == "tokens" else est_cost
        checks.append(Check(kind, counter, amount, limit, ttl, seed, reset_at, settle, quota_id))
    if key.concurrency_limit:
        checks.append(
            Check("concurrency", f"gw:conc:k:{key.id}", 1, key.concurrency_limit, 0, 0, now + 1, "release")
        )
    return Plan(
        rid=rid,
        user_id=key.user_id,
        key_id=key.id,
        checks=checks,
        est_tokens=est_tokens,
        est_cost=est_cost,
        credit=key.credit,
        balance=key.balance,
        balance_seq=key.balance_seq,
        key_budget=key.budget,
        key_spent=key.spent,
        expires_at=now + settings.RELAY_RESERVATION_TTL,
        source=key,
        quotas=refs,
    )


def scale_plan(plan: Plan, rounds: int) -> Plan:
    """A reservation for a request answered by up to ``rounds`` upstream calls (the
    gateway's web-search loop): every token and cost estimate times ``rounds``."""
    for check in plan.checks:
        if check.settle in ("tokens", "cost"):
            check.amount *= rounds
    plan.est_tokens *= rounds
    plan.est_cost *= rounds
    return plan


_MESSAGES = {
    "rpm": "Rate limit reached: this key may make {limit} requests per minute.",
    "user_rpm": "Rate limit reached: this account may make {limit} requests per minute.",
    "tpm": "Rate limit reached: this key may use {limit} tokens per minute.",
    "concurrency": "Too many requests in flight: this key allows {limit} at a time.",
    "quota": "Quota exceeded: {phrase} for this {owner}.",
}


def refusal_error(refusal: Refusal, key: KeyInfo) -> RelayError:
    if refusal.kind == "balance":
        return RelayError(
            402,
            "Your balance is too low for this request. Top up or redeem a code to continue.",
            type="insufficient_quota",
            code="insufficient_balance",
        )
    if refusal.kind == "budget":
        return RelayError(
            402,
            "This API key has reached its budget.",
            type="insufficient_quota",
            code="key_budget_exceeded",
        )
    now = time.time()
    reset = max(refusal.reset_at - now, 0.0) if refusal.reset_at else 0.0
    headers = [
        (b"x-ratelimit-limit", str(refusal.limit).encode()),
        (b"x-ratelimit-remaining", str(refusal.remaining).encode()),
    ]
    if refusal.reset_at:
        headers.append((b"x-ratelimit-reset", str(int(refusal.reset_at)).encode()))
        headers.append((b"retry-after", str(max(int(reset + 0.999), 1)).encode()))
    else:
        headers.append((b"retry-after", b"1"))
    message = _MESSAGES[refusal.kind]
    if refusal.kind == "quota":
        quota_id = refusal.check.quota_id if refusal.check else None
        quota = next((q for q in key.quotas if q.id == quota_id), None)
        message = message.format(
            phrase=quota_phrase(
                metric=quota.metric if quota else "units",
                limit=refusal.limit,
                period=quota.period if quota else "period",
            ),
            owner="key" if quota and quota.owner == "key" else "account",
        )
        return RelayError(429, message, type="insufficient_quota", code="quota_exceeded", headers=headers)
    return RelayError(429, message.format(limit=refusal.limit), code="rate_limit_exceeded", headers=headers)
