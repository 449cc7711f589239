"""Billing of the gateway's web search: every round's tokens at the model's prices plus each
search at the per-request price of the ``web_search`` model, one usage log listing them,
the ledger equal to the balance change; the reservation covers every round; bootstrap
creates the search price."""

from __future__ import annotations

import io

import openai
import pytest
from django.core.management import call_command

from billing.models import BillingRecord, ModelPrice, UsageLog
from core.money import from_nanos, to_nanos
from tests import factories
from tests.conftest import wait_usage
from tests.test_relay_web_search import SEARCH, _searxng_session, searxng  # noqa: F401

SEARCH_PRICE = to_nanos("0.01")


@pytest.fixture
def priced(gateway, world, fake, searxng):  # noqa: F811
    world.route(world.provider(fake), "gpt-4o-mini")  # 1 $/1M prompt tokens, 2 $/1M completion
    web_search = factories.ModelFactory(slug="web_search")
    factories.PriceFactory(
        model=web_search, input_per_1m=0, output_per_1m=0, cached_input_per_1m=0, per_request=SEARCH_PRICE
    )
    user = world.user("gina")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=world.key(user), max_retries=0, timeout=20)
    return user, client


def token_cost(requests) -> int:
    return sum(
        r["usage"]["prompt_tokens"] * 1_000 + r["usage"]["completion_tokens"] * 2_000 for r in requests
    )


def test_balance_change_is_every_round_plus_every_search(priced, fake, searxng):  # noqa: F811
    user, client = priced
    before = user.balance
    page = searxng.page_url("python")
    fake.script(
        {
            "tool_calls": [
                {"name": "search", "arguments": {"query": "python"}},
                {"name": "news", "arguments": {"query": "python"}},
            ]
        },
        SEARCH,
        {"reply": f"See {page}."},
    )
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "python?"}],
        extra_body={"web_search": True},
    )
    rid = raw.headers["x-request-id"]
    log = wait_usage(rid)
    expected = token_cost(fake.requests) + 3 * SEARCH_PRICE
    assert log.cost == expected
    user.refresh_from_db()
    assert before - user.balance == expected
    ledger = BillingRecord.objects.filter(user=user, request_id=rid)
    assert [row.amount for row in ledger] == [-expected]
    assert UsageLog.objects.filter(request_id=rid).count() == 1
    breakdown = log.breakdown
    assert [r["prompt_tokens"] for r in breakdown["rounds"]] == [
        r["usage"]["prompt_tokens"] for r in fake.requests
    ]
    assert sum(r["cost"] for r in breakdown["rounds"]) == token_cost(fake.requests)
    assert [s["query"] for s in breakdown["searches"]] == ["python", "python", "python language"]
    assert breakdown["searches_billed"] == 3 and breakdown["search_cost"] == 3 * SEARCH_PRICE
    # the user sees the same list in their usage logs, amounts as decimal strings
    from tests.api.conftest import client_for

    (shown,) = client_for(user).get("/api/me/usage/").json()["results"]
    assert shown["breakdown"]["search_cost"] == "0.030000000"
    assert [r["cost"] for r in shown["breakdown"]["rounds"]] == [
        str(from_nanos(r["cost"])) for r in breakdown["rounds"]
    ]


def test_a_failed_search_is_not_billed(priced, fake, searxng):  # noqa: F811
    user, client = priced
    searxng.script({"fail": 500})
    fake.script(SEARCH, {"reply": "nothing found"})
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "python?"}],
        extra_body={"web_search": True},
    )
    log = wait_usage(raw.headers["x-request-id"])
    assert log.cost == token_cost(fake.requests)
    assert log.breakdown["searches"][0]["error"] == "unavailable" and log.breakdown["search_cost"] == 0


def test_the_reservation_covers_every_round(priced, fake, searxng, settings):  # noqa: F811
    """A balance that covers one round's estimate but not max_rounds + 1 of them: the loop
    goes upstream with the completion limit that max_rounds + 1 rounds can pay for (the
    budgets rule), every round with that limit; too little for even a minimal answer in
    every round is a 402 up front. Without the round multiplier the limit stays 1000."""
    user, client = priced
    settings.WEB_SEARCH_MAX_ROUNDS = 5
    messages = [{"role": "user", "content": "python?"}]
    # one round: ~6 prompt tokens + 1000 completion -> ~2 million nanos; six: ~12 million
    type(user).objects.filter(pk=user.pk).update(balance=to_nanos("0.005"))
    from relay.config import bump_version

    bump_version()
    plain = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, max_tokens=1000
    )
    assert "x-gateway-max-tokens-lowered" not in plain.headers  # one round fits as asked
    fake.reset()
    fake.script(SEARCH, {"reply": "Python is a language."})
    searched = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, max_tokens=1000, extra_body={"web_search": True}
    )
    asked, lowered = searched.headers["x-gateway-max-tokens-lowered"].split("->")
    assert asked == "1000" and 0 < int(lowered) <= to_nanos("0.005") // 6 // 2_000
    assert [r["json"]["max_tokens"] for r in fake.requests] == [int(lowered)] * 2

    type(user).objects.filter(pk=user.pk).update(balance=to_nanos("0.0001"))
    bump_version()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, max_tokens=1000, extra_body={"web_search": True}
        )
    assert refused.value.status_code == 402


@pytest.mark.django_db
def test_bootstrap_creates_the_search_price_once():
    call_command("bootstrap", "--upstream-url", "http://127.0.0.1:9999/v1", stdout=io.StringIO())
    call_command("bootstrap", "--upstream-url", "http://127.0.0.1:9999/v1", stdout=io.StringIO())
    (price,) = ModelPrice.objects.filter(model__slug="web_search")
    assert price.per_request == to_nanos("0.005") and price.input_per_1m == 0
