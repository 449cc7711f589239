"""Rows the API tests read: usage logs, daily roll-ups, ledger entries, quotas."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from billing.models import BillingRecord, DailyUsage, UsageLog
from core.money import to_nanos
from keys.services import api_key_create
from quotas.models import Quota


def usage_log(user, key=None, *, model="gpt-4o-mini", status=200, cost="0.001", ago=timedelta(0), **fields):
    return UsageLog.objects.create(
        request_id=uuid.uuid4().hex,
        created_at=timezone.now() - ago,
        user=user,
        api_key=key,
        endpoint="/v1/chat/completions",
        model_requested=model,
        model_billed=model,
        prompt_tokens=3,
        completion_tokens=9,
        total_tokens=12,
        cost=to_nanos(cost),
        status_code=status,
        **fields,
    )


def daily(user, *, days_ago=0, requests=5, cost="0.01", model="gpt-4o-mini"):
    return DailyUsage.objects.create(
        day=timezone.localdate() - timedelta(days=days_ago),
        user=user,
        model=model,
        requests=requests,
        cost=to_nanos(cost),
    )


def ledger(user, amount="1", kind=BillingRecord.Kind.TOPUP, key=None):
    return BillingRecord.objects.create(
        user=user,
        api_key=key,
        kind=kind,
        amount=to_nanos(amount),
        balance_after=user.balance,
        description="test",
    )


def world_of(user):
    """A key, a usage log, a ledger row and quotas on the user and the key."""
    key = api_key_create(user=user, name=f"{user.username}'s key").key
    return {
        "key": key,
        "log": usage_log(user, key),
        "ledger": ledger(user, key=key),
        "user_quota": Quota.objects.create(user=user, metric="requests", period="day", limit=100),
        "key_quota": Quota.objects.create(api_key=key, metric="cost", period="month", limit=to_nanos("5")),
    }
