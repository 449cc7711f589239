"""Billing of the gateway's web search: every round's tokens at the model's prices plus each
search at the per-request price of the ``web_search`` model, one usage log listing them,
the ledger equal to the balance change; the reservation covers every round; bootstrap
creates the search price."""

from __future__ import annotations

import io
import json

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


def test_the_loop_spends_no_more_than_it_reserved(priced, fake, searxng, settings):  # noqa: F811
    """A model that searches every round would run 5 searches ($0.05) against a reservation
    of 6 rounds x (prompt + 3,000 completion tokens) (~$0.036): the loop stops searching
    when the rest would not pay for a search and the answering round, so the charge is every
    round and search exactly, never cut down to the reservation (that would be a lost
    charge). Without the guard the charge was capped at the reservation."""
    user, client = priced
    settings.WEB_SEARCH_MAX_ROUNDS = 5
    before = user.balance
    loop = json.dumps({"tool_call": {"name": "search", "arguments": {"query": "again"}}, "reply": "Done."})
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"loop [[fake:{loop}]]"}],
        max_tokens=3000,
        extra_body={"web_search": True},
    )
    assert raw.parse().choices[0].message.content == "Done."
    log = wait_usage(raw.headers["x-request-id"])
    searched = log.breakdown["searches_billed"]
    assert 0 < searched < 5 and len(searxng.requests) == searched
    refused = [s for s in log.breakdown["searches"] if s["error"] == "max_uses_exceeded"]
    assert refused, "the model was told the searches are used up"
    told = [m["content"] for r in fake.requests for m in r["json"]["messages"] if m["role"] == "tool"]
    assert any("what this request may spend is used up" in text for text in told)
    expected = token_cost(fake.requests) + searched * SEARCH_PRICE
    user.refresh_from_db()
    assert log.cost == expected and before - user.balance == expected
    # and within what was reserved: six rounds of the first round's prompt and 3,000 tokens
    first_prompt = fake.requests[0]["usage"]["prompt_tokens"]
    assert expected <= 6 * (first_prompt * 1_000 + 3000 * 2_000) + 6 * 200_000  # prompts grow a little


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

    wait_usage(searched.headers["x-request-id"])  # settled: then the balance is cut to $0.0001
    user.refresh_from_db()
    from accounts.services import user_adjust_balance

    user_adjust_balance(user=user, amount=to_nanos("0.0001") - user.balance)  # a ledger row: mirrored
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
