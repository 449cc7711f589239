"""Settlement: usage events become usage logs, ledger rows, balances and roll-ups.

Idempotent by request id: a batch replayed after a crash finds its request ids already in
UsageLog and charges nothing twice (and the ledger's unique constraint on usage request
ids would refuse a second charge anyway).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, ProtectedError
from django.utils import timezone

from accounts.models import User
from keys.models import APIKey

from .events import UsageEvent
from .models import BillingRecord, DailyUsage, ModelPrice, RedemptionCode, UsageLog
from .selectors import model_price_billed, prices_in_force

logger = logging.getLogger(__name__)

_LOG_FIELDS = (
    "request_type", "endpoint", "model_requested", "model_upstream", "model_billed", "providers_tried",
    "stream", "prompt_tokens", "completion_tokens", "cached_tokens", "usage_estimated", "cost", "status_code",
    "error", "latency_ms", "ttft_ms", "client_ip", "request_bytes", "response_bytes", "client_disconnected",
    "breakdown",
)  # fmt: skip


def _storable(value):
    """``value`` with NUL characters replaced: PostgreSQL refuses them in text and JSON, and
    one such row (a model name or a search query a client or a model sent) would fail the
    whole settlement batch again and again."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _storable_event(event: UsageEvent) -> UsageEvent:
    for name in event.__slots__:
        value = getattr(event, name)
        if isinstance(value, str):
            if "\x00" in value:
                setattr(event, name, _storable(value))
        elif isinstance(value, dict | list | tuple) and b"\\u0000" in orjson.dumps(value):
            setattr(event, name, _storable(value))
    return event


def _usage_log(event: UsageEvent) -> UsageLog:
    log = UsageLog(
        request_id=event.request_id,
        created_at=datetime.fromtimestamp(event.ts, tz=UTC),
        user_id=event.user_id,
        api_key_id=event.key_id,
        provider_id=event.provider_id,
        price_id=event.price_id,
        **{name: _storable(getattr(event, name)) for name in _LOG_FIELDS if getattr(event, name) is not None},
    )
    log.total_tokens = log.prompt_tokens + log.completion_tokens
    log.error = (log.error or "")[:2000]
    return log


def usage_settle_batch(*, events: list[UsageEvent | dict]) -> int:
    """Settle a batch; returns how many events were new. Safe to call again with the
    same events: the database part skips request ids it already has, and the counter
    store releases each pending charge once."""
    from quotas.counters import Settlement, get_store

    events = [_storable_event(UsageEvent.coerce(e)) for e in events]
    settlement = Settlement(charges=[])
    fresh = _settle_in_database(events, settlement)
    settlement.charges = [
        (e.request_id, e.user_id, e.key_id, e.cost) for e in events if e.cost > 0 and e.user_id
    ]
    # A replayed batch (its earlier run committed, then died or lost Redis before the store
    # heard of it) releases its pending charges again: send the balances and key spend the
    # database has now with them, or the store would free the held money while its mirror
    # still shows the balance from before the charge, overstating what can be spent.
    _mirror_replayed(settlement)
    if settlement.charges or settlement.balances:
        get_store().settled(settlement)
    return fresh


@transaction.atomic
def _mirror_replayed(settlement) -> None:
    """Add the database's balance (with its ledger sequence) and key spend of the charged
    users and keys this settlement carries no mirror for, read under their row locks so
    no concurrent settlement moves them in between (same lock order as settlement)."""
    users = sorted({uid for _, uid, _, _ in settlement.charges} - set(settlement.balances))
    keys = sorted({kid for _, _, kid, _ in settlement.charges if kid} - set(settlement.spent))
    if users:
        balances = dict(
            User.objects.select_for_update().filter(pk__in=users).order_by("pk").values_list("pk", "balance")
        )
        seqs = dict(
            BillingRecord.objects.filter(user_id__in=list(balances))
            .values("user_id")
            .annotate(seq=Max("id"))
            .values_list("user_id", "seq")
        )
        for uid, balance in balances.items():
            settlement.balances[uid] = (balance, seqs.get(uid, 0))
    if keys:
        spent = dict(
            APIKey.objects.select_for_update().filter(pk__in=keys).order_by("pk").values_list("pk", "spent")
        )
        stamp = time.time_ns()
        for kid, value in spent.items():
            settlement.spent[kid] = (value, stamp)


@transaction.atomic
def _settle_in_database(events: list[UsageEvent], settlement) -> int:
    by_id: dict[str, UsageEvent] = {}
    for event in events:
        by_id.setdefault(event.request_id, event)  # duplicates inside a batch count once
    if not by_id:
        return 0
    seen = set(UsageLog.objects.filter(request_id__in=list(by_id)).values_list("request_id", flat=True))
    fresh = [event for rid, event in by_id.items() if rid not in seen]
    if not fresh:
        return 0
    UsageLog.objects.bulk_create([_usage_log(e) for e in fresh], batch_size=500)

    charges: dict[int, list[UsageEvent]] = defaultdict(list)
    key_spend: dict[int, int] = defaultdict(int)
    for event in fresh:
        if event.cost > 0 and event.user_id:
            charges[event.user_id].append(event)
            if event.key_id:
                key_spend[event.key_id] += event.cost

    records = []
    balances: dict[int, int] = {}
    for user_id in sorted(charges):  # a fixed order: concurrent batches never deadlock
        user_events = charges[user_id]
        total = sum(e.cost for e in user_events)
        User.objects.filter(pk=user_id).update(balance=F("balance") - total)
        balance = User.objects.filter(pk=user_id).values_list("balance", flat=True).first()
        if balance is None:
            logger.error("usage for a user that no longer exists", extra={"user_id": user_id})
            continue
        balances[user_id] = balance
        # balance_after of each row, walking back from the balance after the whole batch
        running = balance + total
        for event in user_events:
            running -= event.cost
            records.append(
                BillingRecord(
                    user_id=user_id,
                    api_key_id=event.key_id,
                    kind=BillingRecord.Kind.USAGE,
                    amount=-event.cost,
                    balance_after=running,
                    request_id=event.request_id,
                    description=f"{event.model} {event.prompt_tokens}+{event.completion_tokens} tokens"[:255],
                )
            )
    BillingRecord.objects.bulk_create(records, batch_size=500)
    if balances:
        # the ledger row id orders balance mirrors: a stale one never overwrites a newer
        seqs = dict(
            BillingRecord.objects.filter(user_id__in=list(balances))
            .values("user_id")
            .annotate(seq=Max("id"))
            .values_list("user_id", "seq")
        )
        settlement.balances = {uid: (balance, seqs.get(uid, 0)) for uid, balance in balances.items()}
    for key_id in sorted(key_spend):
        APIKey.objects.filter(pk=key_id).update(spent=F("spent") + key_spend[key_id])
    if key_spend:
        stamp = time.time_ns()
        settlement.spent = {
            kid: (spent, stamp)
            for kid, spent in APIKey.objects.filter(pk__in=list(key_spend)).values_list("pk", "spent")
        }
    _roll_up(fresh)
    _roll_up_quotas(fresh)
    return len(fresh)


def _roll_up_quotas(events: list[UsageEvent]) -> None:
    from quotas.models import QuotaUsage

    totals: dict[tuple[int, int], int] = defaultdict(int)
    for event in events:
        for quota_id, start, settle in event.quotas or ():
            amount = {"keep": 1, "tokens": event.tokens, "cost": event.cost}[settle]
            if amount:
                totals[(quota_id, start)] += amount
    for (quota_id, start), amount in sorted(totals.items()):
        period_start = datetime.fromtimestamp(start, tz=UTC)
        updated = QuotaUsage.objects.filter(quota_id=quota_id, period_start=period_start).update(
            used=F("used") + amount
        )
        if not updated:
            QuotaUsage.objects.create(quota_id=quota_id, period_start=period_start, used=amount)


def _roll_up(events: list[UsageEvent]) -> None:
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for event in events:
        day = datetime.fromtimestamp(event.ts, tz=UTC).date()
        row = totals[(day, event.user_id, event.key_id, event.model)]
        row[0] += 1
        row[1] += int(event.status_code >= 400)
        row[2] += event.prompt_tokens
        row[3] += event.completion_tokens
        row[4] += event.cached_tokens
        row[5] += event.cost
    for (day, user_id, key_id, model), row in sorted(totals.items(), key=lambda kv: str(kv[0])):
        updated = DailyUsage.objects.filter(day=day, user_id=user_id, api_key_id=key_id, model=model).update(
            requests=F("requests") + row[0],
            errors=F("errors") + row[1],
            prompt_tokens=F("prompt_tokens") + row[2],
            completion_tokens=F("completion_tokens") + row[3],
            cached_tokens=F("cached_tokens") + row[4],
            cost=F("cost") + row[5],
        )
        if not updated:
            DailyUsage.objects.create(
                day=day,
                user_id=user_id,
                api_key_id=key_id,
                model=model,
                requests=row[0],
                errors=row[1],
                prompt_tokens=row[2],
                completion_tokens=row[3],
                cached_tokens=row[4],
                cost=row[5],
            )


# --- redemption codes ---------------------------------------------------------------------

REDEMPTION_PREFIX = "rc-"


class RedemptionError(Exception):
    pass


def redemption_codes_generate(
    *, count: int, amount: int, batch: str = "", expires_at=None, created_by=None
) -> list[str]:
    """Create ``count`` codes worth ``amount`` nanos each; returns the plain codes, which
    are shown once (only their hashes are stored)."""
    import secrets

    from keys.services import hash_key

    from .models import RedemptionCode

    if not isinstance(count, int) or not 1 <= count <= 10_000:
        raise RedemptionError("count must be between 1 and 10000")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise RedemptionError("amount must be a positive number of nanos")
    plain = [REDEMPTION_PREFIX + secrets.token_urlsafe(18) for _ in range(count)]
    RedemptionCode.objects.bulk_create(
        [
            RedemptionCode(
                prefix=code[:10],
                code_hash=hash_key(code),
                amount=amount,
                batch=batch[:100],
                expires_at=expires_at,
                created_by=created_by,
            )
            for code in plain
        ],
        batch_size=1000,
    )
    return plain


def redemption_redeem(*, user, code: str) -> BillingRecord:
    """Credit the code's amount to ``user``: one ledger row. A code redeems once, even when
    two requests race for it (the status flip is a conditional UPDATE)."""
    from django.utils import timezone

    from accounts.services import user_adjust_balance
    from keys.services import hash_key

    from .models import RedemptionCode

    code_hash = hash_key((code or "").strip())
    with transaction.atomic():
        row = RedemptionCode.objects.filter(code_hash=code_hash).first()
        if row is None:
            raise RedemptionError("This code does not exist.")
        if row.status != RedemptionCode.Status.UNUSED:
            raise RedemptionError(
                "This code has already been used." if row.status == "redeemed" else "This code is disabled."
            )
        now = timezone.now()
        if row.expires_at and row.expires_at <= now:
            raise RedemptionError("This code has expired.")
        claimed = RedemptionCode.objects.filter(pk=row.pk, status=RedemptionCode.Status.UNUSED).update(
            status=RedemptionCode.Status.REDEEMED, redeemed_by=user, redeemed_at=now
        )
        if not claimed:
            raise RedemptionError("This code has already been used.")
        return user_adjust_balance(
            user=user,
            amount=row.amount,
            kind=BillingRecord.Kind.REDEMPTION,
            description=f"redemption code {row.prefix}…",
        )


# --- retention ----------------------------------------------------------------------------


def usage_logs_purge(*, older_than_days: int, batch_size: int = 5000, progress=None) -> int:
    """Delete usage logs older than the retention period, a batch of ids at a time (short
    transactions: the table is never locked for long). Daily roll-ups are kept."""
    from datetime import timedelta

    from django.utils import timezone

    if older_than_days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = list(
            UsageLog.objects.filter(created_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += UsageLog.objects.filter(id__in=ids).delete()[0]
        if progress is not None:
            progress(deleted)


PRICE_UPDATABLE = ("effective_until", "note")


def model_price_create(
    *,
    model,
    input_per_1m: int = 0,
    output_per_1m: int = 0,
    cached_input_per_1m: int = 0,
    per_request: int = 0,
    currency: str = "USD",
    effective_from: datetime | None = None,
    effective_until: datetime | None = None,
    note: str = "",
) -> ModelPrice:
    """A new price version of ``model``; it takes over at ``effective_from`` (default: now)."""
    price = ModelPrice(
        model=model,
        input_per_1m=input_per_1m,
        output_per_1m=output_per_1m,
        cached_input_per_1m=cached_input_per_1m,
        per_request=per_request,
        currency=currency,
        effective_from=effective_from or timezone.now(),
        effective_until=effective_until,
        note=note,
    )
    _check_price(price)
    price.full_clean(exclude=["model"])
    price.save()
    return price


def _check_price(price: ModelPrice) -> None:
    for name in ("input_per_1m", "output_per_1m", "cached_input_per_1m", "per_request"):
        if getattr(price, name) < 0:
            raise ValidationError({name: ["A price cannot be negative."]})
    if price.effective_until is not None and price.effective_until <= price.effective_from:
        raise ValidationError({"effective_until": ["The end must be after effective_from."]})


def model_price_update(*, price: ModelPrice, data: dict[str, Any]) -> ModelPrice:
    """Only the end and the note of a price change: amounts are history (usage logs point at
    the version they were billed with); publish a new version for new amounts."""
    unknown = set(data) - set(PRICE_UPDATABLE)
    if unknown:
        raise ValidationError(
            {name: ["Prices are versioned: create a new price instead."] for name in sorted(unknown)}
        )
    for name, value in data.items():
        setattr(price, name, value)
    _check_price(price)
    price.full_clean(exclude=["model"])
    if data:
        price.save(update_fields=list(data))
    return price


@transaction.atomic
def model_price_replace(
    *, price: ModelPrice, amounts: dict[str, int], effective_from: datetime | None = None, note: str = ""
) -> ModelPrice:
    """New amounts for a model whose price version ``price`` is history: ``price`` ends at
    ``effective_from`` (default: now) and a new version with the amounts takes over then,
    until the old end if it had one."""
    unknown = set(amounts) - {"input_per_1m", "output_per_1m", "cached_input_per_1m", "per_request"}
    if unknown:
        raise ValidationError({name: ["Not a price amount."] for name in sorted(unknown)})
    effective_from = effective_from or timezone.now()
    old_end = price.effective_until
    if old_end is None or old_end > effective_from:
        model_price_update(price=price, data={"effective_until": effective_from})
    return model_price_create(
        model=price.model,
        **amounts,
        currency=price.currency,
        effective_from=effective_from,
        effective_until=old_end if old_end is not None and old_end > effective_from else None,
        note=note,
    )


@transaction.atomic
def model_prices_set(*, amounts_by_model: dict, note: str = "") -> list[ModelPrice]:
    """New amounts for several models at once (the console's bulk price editor), each a new
    version effective now: the version in force ends now and keeps its history; a model
    without a price gets its first."""
    now = timezone.now()
    current = prices_in_force(model_ids=[model.pk for model in amounts_by_model], now=now)
    published = []
    for model, amounts in amounts_by_model.items():
        price = current.get(model.pk)
        if price is None:
            published.append(model_price_create(model=model, **amounts, effective_from=now, note=note))
        else:
            published.append(model_price_replace(price=price, amounts=amounts, effective_from=now, note=note))
    return published


def model_price_delete(*, price: ModelPrice) -> None:
    if model_price_billed(price=price):
        raise ProtectedError(
            "Requests were billed with this price; end it (effective_until) instead.", [price]
        )
    price.delete()


def redemption_code_disable(*, code: RedemptionCode) -> RedemptionCode:
    """An unused code stops being redeemable (a conditional update: a concurrent redemption wins
    or loses cleanly)."""
    updated = RedemptionCode.objects.filter(pk=code.pk, status=RedemptionCode.Status.UNUSED).update(
        status=RedemptionCode.Status.DISABLED
    )
    code.refresh_from_db()
    if not updated and code.status != RedemptionCode.Status.DISABLED:
        raise ValidationError(f"This code is {code.status} and cannot be disabled.")
    return code
