"""Turning a request into a reservation plan, and a refusal into the client's error."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.conf import settings

from billing.pricing import PPM, TOKENS_PER_PRICE_UNIT, Price, token_cost
from core.money import format_money
from quotas.amounts import quota_phrase
from quotas.counters import Check, Plan, Refusal
from quotas.periods import period_bounds

from . import tokens
from .conf import HOT
from .config import KeyInfo
from .errors import RelayError

IMAGE_TOKENS = 1000  # estimate per image part
MESSAGE_TOKENS = 3  # OpenAI's framing of each message (and of the reply)
# Prompts are counted with the shipped cl100k_base tokenizer up to this many characters
# (0.1-1 ms of the event loop at most, depending on the text); the rest of a longer prompt
# counts one token per UTF-8 byte, an upper bound (every token is at least one byte). A
# request refused for money is counted again exactly up to ``FIT_EXACT_CHARS`` before the
# relay lowers its completion limit or refuses it. Measured in docs/decisions.md.
EXACT_CHARS = 2048
FIT_EXACT_CHARS = 32768
# the completion limits a body may carry, in the order the estimate reads them
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _texts(content, out: list[str]) -> int:
    """Append the texts of a message content or block list to ``out``; the number of images."""
    if isinstance(content, str):
        out.append(content)
        return 0
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("image_url", "image", "input_image", "document", "file"):
                images += 1
            elif isinstance(part.get("text"), str):
                out.append(part["text"])
            elif "content" in part:
                images += _texts(part["content"], out)
            elif kind in ("tool_use", "tool_result") or "input" in part:
                out.append(str(part.get("input", "")))
    return images


def count_tokens(texts: list[str], exact: int = EXACT_CHARS) -> int:
    """Tokens of ``texts``: exact up to ``exact`` characters, one per UTF-8 byte beyond."""
    text = "\n".join(texts)
    if len(text) <= exact:
        return tokens.count_text(text)
    return tokens.count_text(text[:exact]) + len(text[exact:].encode("utf-8", "replace"))


def estimate_prompt_tokens(body: dict, exact: int = EXACT_CHARS) -> int:
    texts: list[str] = []
    framing = MESSAGE_TOKENS
    images = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            framing += MESSAGE_TOKENS + 1
            images += _texts(message.get("content"), texts)
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                texts.extend(str(call) for call in calls)
    for name in ("system", "instructions", "prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    texts.append(item)
                elif isinstance(item, int):
                    framing += 1  # a token id
                elif isinstance(item, list):
                    framing += len(item)  # a prompt of token ids
                else:
                    framing += MESSAGE_TOKENS + 1
                    images += _texts([item], texts)
    if body.get("tools"):
        texts.append(str(body["tools"]))
    return count_tokens(texts, exact) + framing + images * IMAGE_TOKENS


def choices(body: dict) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def requested_completion(body: dict, request_type: str, model_max: int | None) -> tuple[int, int | None]:
    """(completion tokens per choice the request may produce, what the client asked for or
    None): the client's limit, no more than the model's; without one, the model's maximum
    (or ``RELAY_DEFAULT_MAX_TOKENS``); 16 for completions, as OpenAI's default."""
    if request_type == "embedding":
        return 0, None
    asked = None
    for name in LIMIT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            asked = value
            break
    if asked is None:
        allowed = 16 if request_type == "completion" else (model_max or HOT.RELAY_DEFAULT_MAX_TOKENS)
    else:
        allowed = min(asked, model_max) if model_max else asked
    return allowed, asked


def estimate_completion_tokens(body: dict, request_type: str, model_max: int | None) -> int:
    return requested_completion(body, request_type, model_max)[0] * choices(body)


def for_money(refusal: Refusal) -> bool:
    """Whether ``refusal`` is about money: the balance, the key budget or a cost quota."""
    return refusal.kind in ("balance", "budget") or (
        refusal.check is not None and refusal.check.settle == "cost"
    )


def completion_that_fits(
    plan: Plan, refusal: Refusal, price: Price | None, multiplier: int, *, rounds: int = 1
) -> int:
    """The largest completion per choice whose reservation fits the money ``refusal`` says
    is left (balance, key budget or a cost quota), or -1 when even no completion does;
    exact: the reservation of that completion never exceeds what is left. ``rounds``: the
    upstream calls reserved for (a tool loop), each costing what one does."""
    if not for_money(refusal):
        return -1
    money = refusal.remaining // rounds
    prompt_cost = token_cost(
        price, prompt_tokens=plan.prompt_tokens, completion_tokens=0, multiplier=multiplier
    )
    if money <= 0 or prompt_cost > money:
        return -1
    if price is None or not price.output_per_1m or not multiplier:
        return plan.completion_tokens  # completions cost nothing more
    per_request = token_cost(price, prompt_tokens=0, completion_tokens=0, multiplier=multiplier)
    # cost = ceil((prompt x input + completion x output) x multiplier / 10^12) + per_request
    # <= money  <=>  (prompt x input + completion x output) x multiplier <= (money - per_request) x 10^12
    prompt_part = plan.prompt_tokens * price.input_per_1m * multiplier
    room = (money - per_request) * TOKENS_PER_PRICE_UNIT * PPM - prompt_part
    fits = room // (price.output_per_1m * multiplier * plan.choices)
    return max(min(fits, plan.completion_tokens), -1)


def lower_completion(call, limit: int) -> None:
    """Send the upstream ``limit`` as the completion limit, in every body of ``call`` that
    carries one (the client's own fields, or ``max_tokens`` when it set none)."""
    for body, name in call.output_limits or ((call.body, ""),):
        present = [field for field in (name,) if field] or [f for f in LIMIT_FIELDS if f in body]
        for field in present or ["max_tokens"]:
            body[field] = limit


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
    *,
    rid: str,
    key: KeyInfo,
    body: dict,
    request_type: str,
    price: Price | None,
    model_max: int | None,
    prompt: int | None = None,
    completion: int | None = None,
) -> Plan:
    """The reservation of a request: its prompt (counted here unless given) and
    ``completion`` tokens per choice (by default what the request may produce) at the
    model's prices."""
    now = time.time()
    if prompt is None:
        prompt = estimate_prompt_tokens(body)
    if completion is None:
        completion = requested_completion(body, request_type, model_max)[0]
    n = choices(body)
    est_tokens = prompt + completion * n
    est_cost = token_cost(
        price, prompt_tokens=prompt, completion_tokens=completion * n, multiplier=key.multiplier
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
        expires_at=now + HOT.RELAY_RESERVATION_TTL,
        source=key,
        quotas=refs,
        prompt_tokens=prompt,
        completion_tokens=completion,
        choices=n,
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


def _money_message(refusal: Refusal, plan: Plan | None, price: Price | None, model: str, key: KeyInfo) -> str:
    """What a request refused for money needed, what was left and how to get it through."""
    if plan is None:  # a request without tokens (a Midjourney task): its fixed price
        if refusal.kind == "balance":
            return "Your balance is too low for this request. Top up or redeem a code to continue."
        return "This API key has reached its budget."
    where = "your balance" if refusal.kind == "balance" else "this key's budget"
    minimum = min(settings.RELAY_MIN_COMPLETION_TOKENS, plan.completion_tokens)
    needed = token_cost(
        price,
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=minimum * plan.choices,
        multiplier=key.multiplier,
    )
    left = format_money(refusal.remaining)
    what = f"{plan.prompt_tokens} prompt tokens"
    if plan.completion_tokens:
        what += f" and at least {minimum} output tokens"
    advice = "top up or redeem a code" if refusal.kind == "balance" else "ask for a higher key budget"
    return (
        f"{where.capitalize()} is too low for this request: {what} of {model or 'this model'} "
        f"cost up to {format_money(needed)}, and {left} is left (less requests in flight). "
        f"Shorten the prompt, or {advice}; a lower max_tokens is applied by the gateway "
        "itself whenever the rest pays for it."
    )


def refusal_error(
    refusal: Refusal,
    key: KeyInfo,
    *,
    plan: Plan | None = None,
    price: Price | None = None,
    model: str = "",
) -> RelayError:
    if refusal.kind == "balance":
        return RelayError(
            402,
            _money_message(refusal, plan, price, model, key),
            type="insufficient_quota",
            code="insufficient_balance",
        )
    if refusal.kind == "budget":
        return RelayError(
            402,
            _money_message(refusal, plan, price, model, key),
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
