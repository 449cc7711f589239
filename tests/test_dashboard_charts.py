"""The Usage page's chart: per day or per hour, with axes, dates and units, filtered by key,
model, provider and (staff) user; the series it draws comes from the usage logs."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from billing.models import DailyUsage, UsageLog
from billing.selectors import usage_series
from core.money import to_nanos
from keys.services import api_key_create
from tests.api.helpers import usage_log
from tests.factories import ProviderFactory, UserFactory

USAGE = reverse("dashboard:usage")


NUMBERS = itertools.count(1)


def log(user, *, ago: timedelta, key=None, model="gpt-4o-mini", provider=None, status=200, cost="0.002"):
    when = usage_log(user, key, model=model, status=status, cost=cost, ago=ago, provider=provider).created_at
    # settlement's daily roll-up of the same request (the day chart reads these)
    rollup, _ = DailyUsage.objects.get_or_create(
        day=timezone.localdate(when), user=user, api_key=key, model=model
    )
    DailyUsage.objects.filter(pk=rollup.pk).update(
        requests=F("requests") + 1,
        errors=F("errors") + int(status >= 400),
        prompt_tokens=F("prompt_tokens") + 3,
        completion_tokens=F("completion_tokens") + 9,
        cost=F("cost") + to_nanos(cost),
    )


@pytest.fixture
def traffic(db):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    first = api_key_create(user=alice, name="first").key
    second = api_key_create(user=alice, name="second").key
    provider = ProviderFactory(name="upstream-a")
    for _ in range(3):
        log(alice, ago=timedelta(minutes=5), key=first, provider=provider)
    log(alice, ago=timedelta(minutes=5), key=second, model="gpt-4o", status=502)
    log(alice, ago=timedelta(days=2, minutes=5), key=first)
    log(bob, ago=timedelta(minutes=5))
    return {"alice": alice, "bob": bob, "first": first, "second": second, "provider": provider}


def test_series_per_day_and_per_hour_with_filters(traffic):
    alice = traffic["alice"]
    days = usage_series(period="day", user=alice)
    assert len(days) == 30 and days[-1]["start"].date() == timezone.localdate()
    assert [d["requests"] for d in days[-3:]] == [1, 0, 4] and days[-1]["errors"] == 1
    assert days[-1]["cost"] == to_nanos("0.008") and days[-1]["tokens"] == 48
    hours = usage_series(period="hour", user=alice)
    assert len(hours) == 48 and sum(h["requests"] for h in hours) == 4  # two days ago is outside
    assert (
        hours[-1]["start"] == timezone.localtime().replace(minute=0, second=0, microsecond=0)
        or hours[-2]["requests"]
    )
    by_key = usage_series(period="day", user=alice, filters={"api_key": traffic["second"].pk})
    assert sum(d["requests"] for d in by_key) == 1
    by_model = usage_series(period="day", user=alice, filters={"model": "gpt-4o-mini"})
    assert sum(d["requests"] for d in by_model) == 4
    by_provider = usage_series(period="day", user=None, filters={"provider": traffic["provider"].pk})
    assert sum(d["requests"] for d in by_provider) == 3  # from the usage logs: roll-ups know no provider
    # days come from the roll-ups, which outlive the usage logs' retention
    UsageLog.objects.filter(user=alice).delete()
    assert [d["requests"] for d in usage_series(period="day", user=alice)[-3:]] == [1, 0, 4]
    assert sum(h["requests"] for h in usage_series(period="hour", user=alice)) == 0
    assert sum(d["requests"] for d in usage_series(period="day", user=None)) == 6  # everyone


def test_chart_has_axes_units_and_dates(client, traffic):
    client.force_login(traffic["alice"])
    page = client.get(USAGE).content.decode()
    assert "Requests per day, last 30 days" in page
    assert "Requests (count)" in page and "Day (UTC)" in page  # axis titles with units
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', page)
    assert ticks == ["0", "1", "2", "3", "4"]  # a readable top: the busiest day had 4
    today = timezone.localdate()
    dates = re.findall(r'<text class="date"[^>]*>([^<]+)</text>', page)
    assert f"{today:%b} {today.day}" in dates and len(dates) >= 6
    assert page.count('class="bar-errors"') == 1  # the failed request, in red
    assert f"{today:%Y-%m-%d}: 4 requests, 1 errors, 48 tokens" in page

    cost = client.get(USAGE, {"metric": "cost", "period": "hour"}).content.decode()
    assert "Cost per hour, last 48 hours" in cost and "Cost (USD)" in cost and "Hour (UTC)" in cost
    assert (
        re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', cost)[-1] == "$0.008"
    )  # the busiest hour cost $0.008
    assert re.search(r'<text class="date"[^>]*>\d\d:00</text>', cost)


def test_filters_by_key_and_model_reach_chart_and_list(client, traffic):
    client.force_login(traffic["alice"])
    page = client.get(USAGE, {"key": traffic["second"].pk}).content.decode()
    assert "1 request costing" in page
    assert page.count("<td>gpt-4o</td>") == 1 and "<td>gpt-4o-mini</td>" not in page
    page = client.get(USAGE, {"model": "gpt-4o-mini"}).content.decode()
    assert "4 requests costing" in page


def test_only_staff_choose_the_user_and_the_provider(client, traffic):
    client.force_login(traffic["alice"])
    page = client.get(USAGE, {"user": "bob"}).content.decode()
    assert 'name="user"' not in page and 'name="provider"' not in page
    assert "5 requests costing" in page  # still her own
    assert "<option" in page and "second (" in page  # her keys to choose from

    staff = UserFactory(username="operator", is_staff=True)
    client.force_login(staff)
    page = client.get(USAGE, {"user": "*"}).content.decode()
    assert "6 requests costing" in page and ", every user" in page
    page = client.get(USAGE, {"user": "*", "provider": traffic["provider"].pk}).content.decode()
    assert "3 requests costing" in page
    page = client.get(USAGE, {"user": "bob"}).content.decode()
    assert "1 request costing" in page
    page = client.get(USAGE, {"user": "nobody"}).content.decode()
    assert "No user has this username." in page
