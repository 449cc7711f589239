"""Resilience end to end: failover, streams, circuit breaker, auto-disable, disconnects,
local token counting, Anthropic and Gemini upstreams, key checks, steady-state caching
and routing strategies. The real ASGI server, real fake upstreams, the official SDK."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import openai
import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import BillingRecord
from core.money import to_nanos
from keys.models import APIKey
from keys.services import api_key_create, api_key_revoke, api_key_rotate
from providers.models import Model, Provider
from providers.openai.adapter import OpenAIStreamTranslator
from relay import config as relay_config
from relay.forward import StreamProgress
from relay.tokens import count_chat_prompt, count_text
from tests.conftest import wait_usage
from tests.fakes.upstream import DEFAULT_REPLY, pieces

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


# --- helpers -------------------------------------------------------------------------------


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def ask(client: openai.OpenAI, text: str = "hello there", model: str = "gpt-4o-mini", **params):
    """A chat completion; returns (completion, request id)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **params
    )
    return raw.parse(), raw.headers["x-request-id"]


def stream_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tried(log) -> list[tuple[int, int]]:
    return [(attempt["provider"], attempt["status"]) for attempt in log.providers_tried]


def eventually(predicate, *, timeout: float = 2.0, message: str = "condition not met"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout} s")
        time.sleep(0.05)


def pair(world, a_target, b_target, *, model: str = "gpt-4o-mini", a_fields=None, b_fields=None):
    """Provider A (tier 10, tried first) and provider B (tier 0) for one model, and a key."""
    a = world.provider(a_target, **{"priority": 10, **(a_fields or {})})
    b = world.provider(b_target, **(b_fields or {}))
    world.route(a, model)
    world.route(b, model)
    user = world.user("alice")
    return SimpleNamespace(a=a, b=b, user=user, key=world.key(user))


# --- 1. failover ---------------------------------------------------------------------------

FAILURES = {
    # kind: (provider A's target, A's extra fields, A's fake script, status recorded for A)
    "http-500": ("fake", {}, {"status": 500}, 500),
    "http-429": ("fake", {}, {"status": 429}, 429),
    "connection-refused": (CLOSED_PORT_URL, {}, None, 502),
    "stall-past-timeout": ("fake", {"timeout_seconds": 1}, {"stall": 3}, 504),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_failover_to_the_next_provider(gateway, world, fake, fake_b, kind):
    target, fields, script, a_status = FAILURES[kind]
    setup = pair(world, fake if target == "fake" else target, fake_b, a_fields=fields)
    if script:
        fake.script(script)
    started = time.monotonic()
    completion, rid = ask(client_for(gateway, setup.key))
    elapsed = time.monotonic() - started

    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 9)
    assert len(fake_b.requests) == 1
    assert len(fake.requests) == (0 if target != "fake" else 1)
    log = wait_usage(rid)
    assert tried(log) == [(setup.a.pk, a_status), (setup.b.pk, 200)]
    assert log.provider_id == setup.b.pk and log.status_code == 200
    assert (log.prompt_tokens, log.completion_tokens, log.usage_estimated) == (2, 9, False)
    assert log.cost == to_nanos("0.000020")  # 2 in at $1/1M + 9 out at $2/1M
    if kind == "stall-past-timeout":
        # the provider's own timeout (1 s) ended the attempt, not the 3 s stall
        assert 1.0 <= elapsed < 2.5


@pytest.fixture
def redirecting():
    """An upstream that answers every POST with a 307 to another (closed) loopback port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(307)
            self.send_header("Location", f"{CLOSED_PORT_URL}/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_redirect_is_not_followed_but_failed_over(gateway, world, redirecting, fake_b):
    # a POST must not be replayed as a GET (or at all) somewhere the operator did not set
    setup = pair(world, redirecting, fake_b)
    completion, rid = ask(client_for(gateway, setup.key))
    assert completion.choices[0].message.content == DEFAULT_REPLY
    log = wait_usage(rid)
    assert tried(log) == [(setup.a.pk, 307), (setup.b.pk, 200)]
    assert f"redirected (307) to {CLOSED_PORT_URL}/v1/chat/completions" in log.providers_tried[0]["error"]


def test_client_error_is_passed_through_not_failed_over(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b)
    fake.script({"status": 400})
    with pytest.raises(openai.BadRequestError) as error:
        ask(client_for(gateway, setup.key))
    assert error.value.status_code == 400
    assert "scripted error 400" in error.value.message
    assert fake_b.requests == []
    log = wait_usage(error.value.response.headers["x-request-id"])
    assert tried(log) == [(setup.a.pk, 400)] and log.status_code == 400 and log.cost == 0
    assert not BillingRecord.objects.filter(request_id=log.request_id).exists()


# --- 2. streaming failover only before the first byte ---------------------------------------


def test_stream_fails_over_before_the_first_byte(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b)
    fake.script({"status": 500})
    raw = client_for(gateway, setup.key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert stream_text(chunks) == DEFAULT_REPLY
    assert chunks[-1].usage.completion_tokens == 9
    assert len(fake.requests) == 1 and len(fake_b.requests) == 1
    log = wait_usage(raw.headers["x-request-id"])
    assert tried(log) == [(setup.a.pk, 500), (setup.b.pk, 200)]
    assert log.provider_id == setup.b.pk and log.stream and log.status_code == 200
    assert (log.completion_tokens, log.usage_estimated) == (9, False)


def test_stream_cut_midway_is_not_failed_over_and_bills_what_was_produced(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b)
    fake.script({"cut_after": 3})
    raw = client_for(gateway, setup.key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    received = []
    with pytest.raises(openai.APIError) as error:
        for chunk in raw.parse():
            received.append(chunk)
    assert not isinstance(error.value, openai.APIStatusError)  # an in-stream error, after a 200
    assert stream_text(received) == "This is a"
    assert fake_b.requests == []  # bytes were already sent: no second provider
    assert fake.requests[0]["cut"] and fake.requests[0]["chunks_sent"] == 3

    log = wait_usage(raw.headers["x-request-id"])
    assert log.status_code == 502 and log.provider_id == setup.a.pk
    assert log.completion_tokens == count_text("This is a") > 0
    assert log.usage_estimated is True and log.cost > 0
    charge = BillingRecord.objects.get(request_id=log.request_id)
    assert charge.amount == -log.cost


# --- 3. circuit breaker ---------------------------------------------------------------------


def test_circuit_breaker_opens_then_half_opens_after_the_cooldown(gateway, world, fake, fake_b, settings):
    settings.RELAY_BREAKER_FAILURES = 2
    settings.RELAY_BREAKER_COOLDOWN = 1
    setup = pair(world, fake, fake_b)
    client = client_for(gateway, setup.key)
    fake.script({"status": 500}, {"status": 500})
    for _ in range(2):
        _, rid = ask(client)
        assert tried(wait_usage(rid)) == [(setup.a.pk, 500), (setup.b.pk, 200)]
    assert len(fake.requests) == 2

    # open: A is skipped without a request
    _, rid = ask(client)
    assert tried(wait_usage(rid)) == [(setup.b.pk, 200)]
    assert len(fake.requests) == 2 and len(fake_b.requests) == 3

    time.sleep(1.1)
    # half-open: this request probes A, which answers, so the breaker closes
    _, rid = ask(client)
    assert tried(wait_usage(rid)) == [(setup.a.pk, 200)]
    _, rid = ask(client)
    assert tried(wait_usage(rid)) == [(setup.a.pk, 200)]
    assert len(fake.requests) == 4 and len(fake_b.requests) == 3


# --- 4. auto-disable and re-enable by the probe ----------------------------------------------


def test_auto_disable_on_upstream_401_and_re_enable_by_probe(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b)
    client = client_for(gateway, setup.key)
    fake.script({"status": 401})
    completion, rid = ask(client)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert tried(wait_usage(rid)) == [(setup.a.pk, 401), (setup.b.pk, 200)]

    def disabled():
        row = Provider.objects.get(pk=setup.a.pk)
        # last_error is written after the status: once it is there the relay was told
        return row if row.status == Provider.Status.AUTO_DISABLED and row.last_error else None

    row = eventually(disabled, message="provider A was not auto-disabled")
    assert "fake upstream: scripted error 401" in row.status_reason
    assert row.health_status == Provider.Health.UNHEALTHY

    for _ in range(3):
        _, rid = ask(client)
        assert tried(wait_usage(rid)) == [(setup.b.pk, 200)]
    assert len(fake.requests) == 1

    # a failing probe keeps it disabled and the command fails
    fake.script({"status": 401})
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("test_providers", stdout=out)
    assert exit_.value.code not in (0, None)
    assert "1 passed, 1 failed" in out.getvalue()
    assert Provider.objects.get(pk=setup.a.pk).status == Provider.Status.AUTO_DISABLED
    _, rid = ask(client)
    assert tried(wait_usage(rid)) == [(setup.b.pk, 200)]

    # a passing probe (GET /v1/models answers) re-enables it, and the relay uses it again
    out = io.StringIO()
    call_command("test_providers", stdout=out)
    assert "2 passed, 0 failed" in out.getvalue()
    assert Provider.objects.get(pk=setup.a.pk).status == Provider.Status.ENABLED
    probes = [r for r in fake.requests if r["path"] == "/v1/models"]
    assert len(probes) == 2

    def served_by_a():
        _, rid = ask(client)
        return wait_usage(rid).provider_id == setup.a.pk

    eventually(served_by_a, timeout=3.0, message="provider A did not serve again")


# --- 5. client disconnect --------------------------------------------------------------------


def test_client_disconnect_cancels_the_upstream_and_bills_once(gateway, world, fake):
    provider = world.provider(fake)
    world.route(provider)
    user = world.user("alice")
    key = world.key(user)
    fake.script({"chunk_delay": 0.3})
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "slow please"}]}
    with httpx.Client(timeout=20) as http:
        response = http.send(
            http.build_request(
                "POST",
                f"{gateway.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json=body,
            ),
            stream=True,
        )
        assert response.status_code == 200
        rid = response.headers["x-request-id"]
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
                if len(events) == 2:
                    break
        closed_at = time.monotonic()
        response.close()
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[1]["choices"][0]["delta"]["content"] == "This"

    record = fake.wait_until_ended(0, timeout=3.0)
    assert record["client_disconnected"] is True and not record["finished"]
    assert record["ended_at"] - closed_at < 1.0
    produced = record["chunks_sent"]
    assert 1 <= produced < 9

    log = wait_usage(rid)
    assert log.client_disconnected is True and log.status_code == 499
    assert log.completion_tokens == count_text("".join(pieces(DEFAULT_REPLY)[:produced]))
    assert 1 <= log.completion_tokens < 9
    assert log.usage_estimated is True and log.cost > 0
    time.sleep(0.2)  # a second settlement, if there were one, would have happened by now
    charges = BillingRecord.objects.filter(request_id=rid)
    assert charges.count() == 1 and charges.get().amount == -log.cost
    user.refresh_from_db()
    assert user.balance == to_nanos("10") - log.cost


# --- 6. local counting when the upstream reports no usage ----------------------------------


@pytest.fixture
def single(world, fake):
    provider = world.provider(fake)
    world.route(provider)
    user = world.user("alice")
    return SimpleNamespace(provider=provider, user=user, key=world.key(user))


@pytest.mark.parametrize("cut", [False, True], ids=["complete", "cut-after-all-chunks"])
def test_stream_without_upstream_usage_is_counted_locally(gateway, single, fake, cut):
    fake.script({"no_usage": True, **({"cut_after": 9} if cut else {})})
    messages = [{"role": "user", "content": "count me please"}]
    raw = client_for(gateway, single.key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    received = []
    if cut:
        with pytest.raises(openai.APIError):
            for chunk in raw.parse():
                received.append(chunk)
    else:
        received = list(raw.parse())
    assert stream_text(received) == DEFAULT_REPLY

    log = wait_usage(raw.headers["x-request-id"])
    assert log.completion_tokens == count_text(DEFAULT_REPLY)
    assert log.prompt_tokens == count_chat_prompt({"messages": messages})
    assert log.usage_estimated is True and log.cost > 0
    assert log.status_code == (502 if cut else 200)


# every kind of place a tokenizer piece can end: runs of spaces, tabs, blank lines, code,
# accents, emoji, digits, contractions
LONG_REPLY = (
    "Déjà vu:  the café's naïve résumé, isn't it?\n\n```python\nprint('x')  # 12345\n```\n"
    "\t- item ☀️  done.   Next:\r\n"
) * 40


def test_long_stream_without_upstream_usage_is_counted_exactly(gateway, single, fake):
    # the gateway counts a stream's text as it comes and drops it (an open stream keeps no
    # answer): the count must still be the whole answer's, token for token
    fake.script({"no_usage": True, "reply": LONG_REPLY})
    messages = [{"role": "user", "content": "count me please"}]
    raw = client_for(gateway, single.key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True
    )
    assert stream_text(list(raw.parse())) == LONG_REPLY
    log = wait_usage(raw.headers["x-request-id"])
    assert len(pieces(LONG_REPLY)) > 20 * StreamProgress.TAKE_PARTS
    assert (log.completion_tokens, log.usage_estimated) == (count_text(LONG_REPLY), True)


def test_stream_progress_keeps_no_answer_and_counts_it_exactly():
    translator = OpenAIStreamTranslator(model="gpt-4o-mini", include_usage=False)
    progress = StreamProgress(call=None, translator=translator)
    for piece in pieces(LONG_REPLY):
        event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        translator.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
        if len(translator.text_parts) >= progress.TAKE_PARTS:  # as the forwarder does
            progress.take()
        # what a stream holds of its answer: the pieces since the last count, and the
        # last word, never the text so far
        assert len(translator.text_parts) < progress.TAKE_PARTS and len(progress.tail) < 200
    progress.take(final=True)
    assert progress.completion == count_text(LONG_REPLY)


# --- 7. Anthropic upstream ------------------------------------------------------------------

CLAUDE = "claude-3-5-sonnet-latest"
LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


@pytest.fixture
def anthropic_setup(world, fake):
    provider = world.provider(fake, type="anthropic", api_key="sk-ant-test")
    world.route(provider, CLAUDE)
    user = world.user("alice")
    return SimpleNamespace(provider=provider, user=user, key=world.key(user))


def test_anthropic_upstream_json_and_stream(gateway, anthropic_setup, fake):
    client = client_for(gateway, anthropic_setup.key)
    completion, rid = ask(client, "say hello please", model=CLAUDE)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 9)
    upstream = fake.requests[-1]
    assert upstream["path"] == "/v1/messages"
    assert upstream["headers"]["x-api-key"] == "sk-ant-test"
    assert upstream["headers"]["anthropic-version"]
    assert anthropic_setup.key not in json.dumps(upstream["headers"])
    assert upstream["json"]["model"] == CLAUDE
    assert upstream["json"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "say hello please"}]}
    ]
    log = wait_usage(rid)
    assert (log.prompt_tokens, log.completion_tokens, log.usage_estimated) == (3, 9, False)
    assert log.provider_id == anthropic_setup.provider.pk

    raw = client.chat.completions.with_raw_response.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert stream_text(chunks) == DEFAULT_REPLY
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 9)
    assert fake.requests[-1]["json"]["stream"] is True
    log = wait_usage(raw.headers["x-request-id"])
    assert (log.prompt_tokens, log.completion_tokens, log.usage_estimated) == (2, 9, False)


def test_anthropic_tool_call_round_trip(gateway, anthropic_setup, fake):
    client = client_for(gateway, anthropic_setup.key)
    fake.script({"tool_call": True})
    first = client.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "weather"}],
        tools=[LOOKUP_TOOL],
        tool_choice="auto",
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"query": "weather"}
    sent = fake.requests[-1]["json"]
    assert sent["tools"] == [
        {
            "name": "lookup",
            "description": "Look something up",
            "input_schema": LOOKUP_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "auto"}

    second = client.chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "user", "content": "weather"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[LOOKUP_TOOL],
    )
    assert second.choices[0].message.content == DEFAULT_REPLY
    sent = fake.requests[-1]["json"]
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call.id, "name": "lookup", "input": {"query": "weather"}}],
    }
    assert sent["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }


def test_anthropic_overloaded_fails_over_to_openai(gateway, world, fake, fake_b):
    claude = world.provider(fake, type="anthropic", api_key="sk-ant-test", priority=10)
    backup = world.provider(fake_b)
    world.route(claude, CLAUDE)
    world.route(backup, CLAUDE)
    key = world.key(world.user("alice"))
    fake.script({"status": 529})
    completion, rid = ask(client_for(gateway, key), model=CLAUDE)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert fake.requests[0]["headers"]["x-api-key"] == "sk-ant-test"
    assert fake_b.requests[0]["path"] == "/v1/chat/completions"
    log = wait_usage(rid)
    assert tried(log) == [(claude.pk, 529), (backup.pk, 200)] and log.provider_id == backup.pk


# --- 8. Gemini upstream ---------------------------------------------------------------------

GEMINI = "gemini-1.5-flash"


def test_gemini_upstream_json_and_stream(gateway, world, fake):
    provider = world.provider(fake, type="gemini", api_key="g-test-key")
    world.route(provider, GEMINI)
    key = world.key(world.user("alice"))
    client = client_for(gateway, key)

    completion, rid = ask(client, "say hello please", model=GEMINI)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 9)
    upstream = fake.requests[-1]
    assert upstream["path"] == f"/v1beta/models/{GEMINI}:generateContent"
    assert upstream["headers"]["x-goog-api-key"] == "g-test-key"
    assert upstream["json"]["contents"] == [{"role": "user", "parts": [{"text": "say hello please"}]}]
    log = wait_usage(rid)
    assert (log.prompt_tokens, log.completion_tokens, log.usage_estimated) == (3, 9, False)

    raw = client.chat.completions.with_raw_response.create(
        model=GEMINI,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert stream_text(chunks) == DEFAULT_REPLY
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 9)
    upstream = fake.requests[-1]
    assert upstream["path"] == f"/v1beta/models/{GEMINI}:streamGenerateContent"
    assert upstream["query"] == {"alt": "sse"}
    log = wait_usage(raw.headers["x-request-id"])
    assert (log.prompt_tokens, log.completion_tokens, log.usage_estimated) == (2, 9, False)


# --- 9. keys --------------------------------------------------------------------------------


def test_revoked_and_expired_keys_get_401(gateway, single):
    revoked = api_key_create(user=single.user)
    api_key_revoke(key=revoked.key)
    with pytest.raises(openai.AuthenticationError) as error:
        ask(client_for(gateway, revoked.plain))
    assert error.value.code == "invalid_api_key" and "revoked" in error.value.message

    expired = api_key_create(user=single.user, expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(openai.AuthenticationError) as error:
        ask(client_for(gateway, expired.plain))
    assert error.value.code == "invalid_api_key" and "expired" in error.value.message


def test_rotated_key_works_during_grace_only(gateway, single):
    old = api_key_create(user=single.user)
    new = api_key_rotate(key=old.key, grace=timedelta(seconds=1))
    old.key.refresh_from_db()
    assert old.key.replaced_by_id == new.key.pk
    completion, _ = ask(client_for(gateway, old.plain))  # within the grace period
    assert completion.choices[0].message.content == DEFAULT_REPLY

    time.sleep(max(0.0, (old.key.valid_until - timezone.now()).total_seconds()) + 0.05)
    with pytest.raises(openai.AuthenticationError) as error:
        ask(client_for(gateway, old.plain))
    assert "rotated" in error.value.message
    completion, _ = ask(client_for(gateway, new.plain))
    assert completion.choices[0].message.content == DEFAULT_REPLY


def test_suspended_user_gets_403(gateway, single):
    from accounts.services import user_set_status

    client = client_for(gateway, single.key)
    ask(client)
    user_set_status(user=single.user, status="suspended")

    def refused():
        try:
            ask(client)
        except openai.PermissionDeniedError as error:
            return error
        return None

    error = eventually(refused, timeout=1.5, message="the suspended user's key kept working")
    assert error.status_code == 403 and error.code == "account_inactive"


def test_ip_allow_list(gateway, single):
    elsewhere = api_key_create(user=single.user, allowed_ips=["10.0.0.0/8"])
    with pytest.raises(openai.PermissionDeniedError) as error:
        ask(client_for(gateway, elsewhere.plain))
    assert error.value.code == "ip_not_allowed"
    here = api_key_create(user=single.user, allowed_ips=["127.0.0.1"])
    completion, _ = ask(client_for(gateway, here.plain))
    assert completion.choices[0].message.content == DEFAULT_REPLY


def test_revoking_a_cached_key_stops_it_quickly(gateway, single):
    issued = api_key_create(user=single.user)
    client = client_for(gateway, issued.plain)
    ask(client)  # now cached by the relay
    api_key_revoke(key=issued.key)

    def refused():
        try:
            ask(client)
        except openai.AuthenticationError:
            return True
        return False

    eventually(refused, timeout=1.5, message="the revoked key kept working")


def test_last_used_at_is_set_after_the_first_request(gateway, single):
    issued = api_key_create(user=single.user)
    assert issued.key.last_used_at is None
    ask(client_for(gateway, issued.plain))
    eventually(
        lambda: APIKey.objects.get(pk=issued.key.pk).last_used_at is not None,
        message="last_used_at was not set",
    )


# --- 10. no SQL in steady state ---------------------------------------------------------------


def _in_settlement(frame) -> bool:
    """Whether a statement comes from usage settlement (batched writes, not the request path)."""
    while frame is not None:
        if f"{os.sep}billing{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_steady_state_makes_no_sql_queries(gateway, single, monkeypatch):
    from django.db.backends.utils import CursorWrapper

    client = client_for(gateway, single.key)
    ask(client)  # warm-up: loads the key and the model
    chunks = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert stream_text(chunks) == DEFAULT_REPLY

    statements: list[str] = []
    original = CursorWrapper._execute_with_wrappers

    def spy(self, sql, params, many, executor):  # every thread, every connection
        if not _in_settlement(sys._getframe(1)):
            statements.append(str(sql))
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", spy)
    loads = dict(relay_config.LOADS)
    for index in range(50):
        if index % 2:
            chunks = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
            )
            assert stream_text(chunks) == DEFAULT_REPLY
        else:
            assert ask(client)[0].choices[0].message.content == DEFAULT_REPLY
    assert dict(relay_config.LOADS) == loads
    # usage settlement writes in the background; serving the requests ran no SQL at all
    assert statements == []


# --- 11. routing strategies ------------------------------------------------------------------


def _strategy(slug: str, strategy: str) -> None:
    model = Model.objects.get(slug=slug)
    model.routing_strategy = strategy
    model.save()  # the signal bumps the relay's config version


def _served_by(fake, fake_b, client, count: int) -> list[str]:
    order = []
    for _ in range(count):
        before = (len(fake.requests), len(fake_b.requests))
        ask(client)
        after = (len(fake.requests), len(fake_b.requests))
        order.append("A" if after[0] > before[0] else "B" if after[1] > before[1] else "?")
    return order


def test_round_robin_alternates(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b, a_fields={"priority": 0})
    _strategy("gpt-4o-mini", "round_robin")
    order = _served_by(fake, fake_b, client_for(gateway, setup.key), 4)
    assert order == ["A", "B", "A", "B"]
    assert (len(fake.requests), len(fake_b.requests)) == (2, 2)


def test_weighted_follows_the_weights(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b, a_fields={"priority": 0, "weight": 1}, b_fields={"weight": 9})
    _strategy("gpt-4o-mini", "weighted")
    order = _served_by(fake, fake_b, client_for(gateway, setup.key), 60)
    assert "?" not in order
    assert order.count("B") > 40  # expected 54 of 60


def test_higher_priority_tier_takes_all_traffic_while_healthy(gateway, world, fake, fake_b):
    setup = pair(world, fake, fake_b, a_fields={"weight": 1}, b_fields={"weight": 50})
    _strategy("gpt-4o-mini", "weighted")
    order = _served_by(fake, fake_b, client_for(gateway, setup.key), 15)
    assert order == ["A"] * 15
    assert fake_b.requests == []


# --- 6b. JSON answers without upstream usage ------------------------------------------------


@pytest.mark.parametrize(
    ("provider_type", "model"), [("openai", "gpt-4o-mini"), ("anthropic", CLAUDE), ("gemini", GEMINI)]
)
def test_json_answer_without_upstream_usage_is_counted_locally(gateway, world, fake, provider_type, model):
    provider = world.provider(fake, type=provider_type)
    world.route(provider, model)
    key = world.key(world.user("alice"))
    fake.script({"no_usage": True})
    messages = [{"role": "user", "content": "count me please"}]
    completion, rid = ask(client_for(gateway, key), "count me please", model=model)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    log = wait_usage(rid)
    # the answer is right there: its tokens are billed too, not just the prompt's (or nothing)
    expected = (True, count_chat_prompt({"messages": messages}), count_text(DEFAULT_REPLY))
    assert (log.usage_estimated, log.prompt_tokens, log.completion_tokens) == expected
    assert log.cost > 0
