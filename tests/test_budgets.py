"""Budgets on what can actually be spent (issue 13 item 5, issue 14 point 11).

A key budget and a balance plus credit limit hold exactly at 200 concurrent requests with
prompts the old characters/3 estimate undercounted and with an upstream that ignores
``max_tokens``; a request the money left cannot pay for in full is sent upstream with a
lower completion limit (and says so in a header), or refused with what it needed.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from billing.models import BillingRecord, ModelPrice, UsageLog
from billing.pricing import Price, token_cost
from core.money import format_money, to_nanos
from keys.models import APIKey
from relay.limits import FIT_EXACT_CHARS, estimate_prompt_tokens
from tests import factories
from tests.conftest import settle_usage

WORDY = " ".join(["a"] * 300)  # 600 characters, 300 tokens (the old estimate said 201)
LONG_REPLY = " ".join(["word"] * 200)  # 200 completion tokens, whatever max_tokens said
LOWERED = "x-gateway-max-tokens-lowered"


@pytest.fixture
def route(world, fake):
    provider = world.provider(fake)
    world.route(provider, "gpt-4o-mini")  # $1 / $2 per 1M tokens
    return provider


async def _burst(url: str, key: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body
                )
                for body in bodies
            )
        )


def _body(content: str, max_tokens: int = 20) -> dict:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
    }


CASES = {
    # the prompt is counted with the tokenizer: 300 tokens, not 600 / 3
    "word-heavy prompts": (_body(WORDY), None),
    # 200 completion tokens on a request that reserved 5
    "upstream ignores max_tokens": (_body("tell me a story", max_tokens=5), {"reply": LONG_REPLY}),
}


def _run(gateway, fake, key: str, case: str) -> list[httpx.Response]:
    body, behaviour = CASES[case]
    if behaviour is not None:
        fake.script(*([behaviour] * 200))
    responses = asyncio.run(_burst(gateway.url, key, [body] * 200))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, statuses
    assert statuses.count(200) >= 2 and statuses.count(402) >= 100
    _settled({r.headers["x-request-id"] for r in responses})
    if behaviour is None:  # within the reservation: each is charged its full use, not less
        price = _price("gpt-4o-mini")
        logs = UsageLog.objects.filter(status_code=200)
        assert logs.count() == statuses.count(200)
        for log in logs:
            assert log.cost == token_cost(
                price, prompt_tokens=log.prompt_tokens, completion_tokens=log.completion_tokens
            )
    return responses


def _settled(request_ids: set[str], timeout: float = 30.0) -> None:
    """Wait until every request has its usage log (each one, refused or not, has one)."""
    deadline = time.monotonic() + timeout
    while UsageLog.objects.filter(request_id__in=request_ids).count() < len(request_ids):
        assert time.monotonic() < deadline, "usage not settled in time"
        settle_usage()
        time.sleep(0.1)


def _price(slug: str) -> Price:
    row = ModelPrice.objects.filter(model__slug=slug).latest("effective_from")
    return Price(row.id, row.input_per_1m, row.output_per_1m, row.cached_input_per_1m, row.per_request)


def _charged(**owner) -> int:
    return -sum(BillingRecord.objects.filter(kind="usage", **owner).values_list("amount", flat=True))


@pytest.mark.parametrize("case", list(CASES))
def test_key_budget_holds_exactly_at_200_concurrent_requests(gateway, world, route, fake, case):
    budget = to_nanos("0.002")
    user = world.user("kb")
    key = world.key(user, budget=budget)
    responses = _run(gateway, fake, key, case)
    refused = next(r for r in responses if r.status_code == 402)
    assert refused.json()["error"]["code"] == "key_budget_exceeded"
    api_key = APIKey.objects.get(user=user)
    assert api_key.spent == _charged(api_key=api_key)
    assert budget // 2 <= api_key.spent <= budget  # 0 % overshoot


@pytest.mark.parametrize("case", list(CASES))
def test_balance_and_credit_limit_hold_exactly_at_200_concurrent_requests(gateway, world, route, fake, case):
    balance, credit = to_nanos("0.0015"), to_nanos("0.0005")
    user = world.user("bal", balance=balance)
    user.credit_limit = credit
    user.save()
    key = world.key(user)
    responses = _run(gateway, fake, key, case)
    refused = next(r for r in responses if r.status_code == 402)
    assert refused.json()["error"]["code"] == "insufficient_balance"
    user.refresh_from_db()
    assert user.balance == balance - _charged(user=user)
    assert user.balance >= -credit  # 0 % overshoot
    assert _charged(user=user) >= (balance + credit) // 2


def test_over_delivery_is_charged_what_was_reserved(gateway, world, route, fake):
    key = world.key(world.user("over"))
    fake.script({"reply": LONG_REPLY})
    body = _body("tell me a story", max_tokens=5)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 200  # what the upstream said
    from tests.conftest import wait_usage

    log = wait_usage(response.headers["x-request-id"])
    assert log.completion_tokens == 200
    reserved = token_cost(
        _price("gpt-4o-mini"), prompt_tokens=estimate_prompt_tokens(body), completion_tokens=5
    )
    assert (
        log.cost
        == reserved
        < token_cost(_price("gpt-4o-mini"), prompt_tokens=log.prompt_tokens, completion_tokens=200)
    )


@pytest.fixture
def gpt4o(world, fake):
    provider = world.provider(fake)
    model = factories.ModelFactory(slug="gpt-4o")
    factories.PriceFactory(model=model, input_per_1m=to_nanos("2.5"), output_per_1m=to_nanos("10"))
    world.route(provider, "gpt-4o")
    return provider


def _post(gateway, key: str, path: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}", headers={"Authorization": f"Bearer {key}", **headers}, json=body, timeout=30
    )


def test_one_cent_on_gpt_4o_without_max_tokens_is_served_with_a_lower_limit(gateway, world, fake, gpt4o):
    # issue 14 point 11: 4,096 output tokens of gpt-4o cost $0.04; $0.01 pays for ~990
    balance = to_nanos("0.01")
    key = world.key(world.user("cent", balance=balance))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}
    response = _post(gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    sent = fake.requests[-1]["json"]["max_tokens"]
    assert response.headers[LOWERED] == f"4096->{sent}"
    price = _price("gpt-4o")
    prompt = estimate_prompt_tokens(body)
    assert token_cost(price, prompt_tokens=prompt, completion_tokens=sent) <= balance
    assert token_cost(price, prompt_tokens=prompt, completion_tokens=sent + 1) > balance


def test_a_client_max_tokens_is_lowered_only_as_far_as_needed(gateway, world, fake, gpt4o):
    key = world.key(world.user("plenty", balance=to_nanos("10")))
    body = {"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}
    response = _post(gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 200 and LOWERED not in response.headers
    assert fake.requests[-1]["json"]["max_tokens"] == 300
    # a key budget that pays for 100 output tokens and the prompt
    price = _price("gpt-4o")
    prompt = estimate_prompt_tokens(body)
    budget = token_cost(price, prompt_tokens=prompt, completion_tokens=100)
    for field in ("max_tokens", "max_completion_tokens"):
        key = world.key(world.user(f"tight-{field}", balance=to_nanos("10")), budget=budget)
        fake.reset()
        body = {
            "model": "gpt-4o",
            field: 300,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json=body,
        ) as response:
            assert response.status_code == 200
            assert response.headers[LOWERED] == "300->100"
            response.read()
        assert fake.requests[-1]["json"][field] == 100


def test_lowered_limit_reaches_anthropic_and_responses_upstreams(gateway, world, fake):
    anthropic = world.provider(fake, type="anthropic")
    claude = factories.ModelFactory(slug="claude-3-5-sonnet-latest")
    factories.PriceFactory(model=claude, input_per_1m=to_nanos("3"), output_per_1m=to_nanos("15"))
    world.route(anthropic, "claude-3-5-sonnet-latest")
    openai_native = world.provider(fake, responses_api=True)
    world.route(openai_native, "gpt-4o-mini")
    price = _price("claude-3-5-sonnet-latest")
    body = {
        "model": "claude-3-5-sonnet-latest",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hello"}],
    }
    prompt = estimate_prompt_tokens(body)
    key = world.key(
        world.user("claude", balance=token_cost(price, prompt_tokens=prompt, completion_tokens=50))
    )
    response = _post(gateway, key, "/v1/messages", body, **{"anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    assert response.headers[LOWERED] == "1000->50"
    assert fake.requests[-1]["path"] == "/v1/messages" and fake.requests[-1]["json"]["max_tokens"] == 50

    body = {"model": "gpt-4o-mini", "max_output_tokens": 1000, "input": "hello"}
    price = _price("gpt-4o-mini")
    prompt = estimate_prompt_tokens(body)
    key = world.key(world.user("resp", balance=token_cost(price, prompt_tokens=prompt, completion_tokens=40)))
    response = _post(gateway, key, "/v1/responses", body)
    assert response.status_code == 200, response.text
    assert response.headers[LOWERED] == "1000->40"
    assert fake.requests[-1]["path"] == "/v1/responses"
    assert fake.requests[-1]["json"]["max_output_tokens"] == 40


def test_refusal_says_what_was_needed_and_what_is_left(gateway, world, fake, gpt4o):
    key = world.key(world.user("broke", balance=to_nanos("0.00001")))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}
    response = _post(gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_balance"
    prompt = estimate_prompt_tokens(body)
    needed = token_cost(_price("gpt-4o"), prompt_tokens=prompt, completion_tokens=16)
    message = error["message"]
    assert f"{prompt} prompt tokens and at least 16 output tokens of gpt-4o" in message
    assert f"cost up to {format_money(needed)}" in message and "$0.00001 is left" in message
    assert "Shorten the prompt" in message and not fake.requests


def test_prompt_count_uses_the_tokenizer_with_a_bound_for_huge_prompts():
    assert estimate_prompt_tokens(_body(WORDY)) == 300 + 3 + 4
    huge = "é" * 20_000  # beyond the exact part: one token per UTF-8 byte, an upper bound
    from relay import tokens
    from relay.limits import EXACT_CHARS

    bound = estimate_prompt_tokens(_body(huge))
    assert bound >= tokens.count_text(huge) + 7
    assert bound == tokens.count_text(huge[:EXACT_CHARS]) + 2 * (20_000 - EXACT_CHARS) + 7


def test_a_long_prompt_is_counted_exactly_before_it_is_lowered_or_refused(gateway, world, fake, gpt4o):
    # 20,000 characters: the hot path's bound says about 16,400 tokens, the prompt has 4,000
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "word " * 4000}]}
    bound, exact = estimate_prompt_tokens(body), estimate_prompt_tokens(body, FIT_EXACT_CHARS)
    assert 4000 < exact <= 4010 and bound > 3 * exact
    price = _price("gpt-4o")
    balance = token_cost(price, prompt_tokens=exact, completion_tokens=100)
    key = world.key(world.user("long", balance=balance))
    response = _post(gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.headers[LOWERED] == "4096->100"
    assert fake.requests[-1]["json"]["max_tokens"] == 100


def test_a_cost_quota_lowers_the_limit_too(gateway, world, fake, gpt4o):
    from quotas.models import Quota

    user = world.user("quota", balance=to_nanos("10"))
    key = world.key(user)
    body = {"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}
    limit = token_cost(_price("gpt-4o"), prompt_tokens=estimate_prompt_tokens(body), completion_tokens=120)
    Quota.objects.create(user=user, metric="cost", period="day", limit=limit)
    response = _post(gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.headers[LOWERED] == "300->120"
    assert fake.requests[-1]["json"]["max_tokens"] == 120


@pytest.mark.parametrize(
    ("type", "model", "sent"),
    [
        ("gemini", "gemini-1.5-flash", lambda body: body["generationConfig"]["maxOutputTokens"]),
        ("anthropic", "claude-3-5-sonnet-latest", lambda body: body["max_tokens"]),
        ("azure", "gpt-4o-mini", lambda body: body["max_tokens"]),
    ],
)
def test_lowered_limit_reaches_translated_upstreams(gateway, world, fake, type, model, sent):
    extra = {"api_version": "2024-10-21"} if type == "azure" else {}
    world.route(world.provider(fake, type=type, **extra), model)
    body = {"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": "hello"}]}
    balance = token_cost(_price(model), prompt_tokens=estimate_prompt_tokens(body), completion_tokens=50)
    key = world.key(world.user(f"translated-{type}", balance=balance))
    response = _post(gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.headers[LOWERED] == "1000->50"
    assert sent(fake.requests[-1]["json"]) == 50
