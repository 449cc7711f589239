"""Web search run by the gateway ("web_search": true on /v1/chat/completions), end to end:
the openai SDK against the real gateway, the fake upstream scripted to call the gateway's
tools, and the fake SearXNG (both on loopback)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from core import outbound
from tests.conftest import wait_usage
from tests.fakes.searxng import FakeSearxng
from tests.test_outbound import FakeResolver

SEARCH = {"tool_call": {"name": "search", "arguments": {"query": "python language"}}}


@pytest.fixture(scope="module")
def _searxng_session():
    with FakeSearxng() as server:
        yield server


@pytest.fixture
def searxng(_searxng_session, settings):
    _searxng_session.reset()
    settings.WEB_SEARCH_URL = _searxng_session.url
    settings.OUTBOUND_ALLOWED_HOSTS = []  # the backend is trusted as configured, nothing else
    yield _searxng_session
    _searxng_session.reset()


@pytest.fixture
def client(gateway, world, fake, searxng):
    world.route(world.provider(fake), "gpt-4o-mini")
    key = world.key(world.user("alice"))
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def ask(client, content="what is python?", **extra):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": content}],
        extra_body={"web_search": True},
        **extra,
    )
    return raw.parse(), raw.headers["x-request-id"]


def upstream_sum(fake) -> tuple[int, int]:
    usages = [r["usage"] for r in fake.requests]
    return sum(u["prompt_tokens"] for u in usages), sum(u["completion_tokens"] for u in usages)


def test_one_round_cites_the_page_and_bills_both_calls_once(client, fake, searxng):
    page = searxng.page_url("python")
    fake.script(SEARCH, {"reply": f"Python is a programming language, see {page} for more."})
    completion, rid = ask(client)
    message = completion.choices[0].message
    assert message.content == f"Python is a programming language, see {page} for more."
    assert not message.tool_calls and completion.choices[0].finish_reason == "stop"
    (annotation,) = message.annotations
    cited = annotation.url_citation
    assert annotation.type == "url_citation" and cited.url == page
    assert cited.title == "Python (programming language)"
    assert message.content[cited.start_index : cited.end_index] == page
    # two upstream calls: the first offered the gateway's tools, the second carried the results
    assert len(fake.requests) == 2
    first, second = (r["json"] for r in fake.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["search", "news", "crawler"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_fake_1"
    assert json.loads(tool_message["content"])["results"][0]["url"] == page
    assert all("web_search" not in r["json"] for r in fake.requests)
    assert searxng.requests[0]["query"] == {"q": "python language", "format": "json"}
    # the client's usage and the one usage log are the sum of both rounds
    prompt, completion_tokens = upstream_sum(fake)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, completion_tokens)
    log = wait_usage(rid)
    assert (log.prompt_tokens, log.completion_tokens, log.status_code) == (prompt, completion_tokens, 200)
    assert len(log.providers_tried) == 2
    from billing.models import UsageLog

    assert UsageLog.objects.filter(request_id=rid).count() == 1


def test_two_rounds_with_news_and_crawler_text(client, fake, searxng, settings):
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{searxng.port}"]  # the crawled pages live there
    page = searxng.page_url("python")
    fake.script(
        {
            "tool_calls": [
                {"name": "search", "arguments": {"query": "python"}},
                {"name": "news", "arguments": {"query": "python"}},
            ]
        },
        {"tool_call": {"name": "crawler", "arguments": {"url": page}}},
        {"reply": f"Created by Guido van Rossum ({page})."},
    )
    completion, rid = ask(client)
    assert completion.choices[0].message.content == f"Created by Guido van Rossum ({page})."
    assert completion.choices[0].message.annotations[0].url_citation.url == page
    assert len(fake.requests) == 3
    round2 = fake.requests[1]["json"]["messages"]
    assert [m["role"] for m in round2[-3:]] == ["assistant", "tool", "tool"]
    assert json.loads(round2[-1]["content"])["results"][0]["title"] == "Python 3.14 released"
    crawled = json.loads(fake.requests[2]["json"]["messages"][-1]["content"])
    assert "Guido van Rossum" in crawled["content"] and "<" not in crawled["content"]
    assert "var x" not in crawled["content"]  # scripts dropped
    # the main text only (trafilatura): no navigation, no footer
    assert "Site menu" not in crawled["content"] and "Copyright footer" not in crawled["content"]
    prompt, completion_tokens = upstream_sum(fake)
    assert completion.usage.total_tokens == prompt + completion_tokens
    log = wait_usage(rid)
    assert (log.prompt_tokens, log.completion_tokens) == (prompt, completion_tokens)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_client_tool_call_ends_the_loop(client, fake, searxng):
    fake.script({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}})
    completion, _ = ask(client, tools=[WEATHER])
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert len(fake.requests) == 1 and not searxng.requests
    names = [t["function"]["name"] for t in fake.requests[0]["json"]["tools"]]
    assert names == ["get_weather", "search", "news", "crawler"]
    # mixed with a call of the gateway's tool: the client gets its own call only
    fake.script(
        {
            "tool_calls": [
                {"name": "search", "arguments": {"query": "x"}},
                {"name": "get_weather", "arguments": {"city": "Oslo"}},
            ]
        }
    )
    completion, _ = ask(client, tools=[WEATHER])
    assert [c.function.name for c in completion.choices[0].message.tool_calls] == ["get_weather"]
    assert not searxng.requests


def test_max_rounds_then_one_call_without_the_tools(client, fake, searxng, settings):
    settings.WEB_SEARCH_MAX_ROUNDS = 2
    loop = json.dumps(
        {"tool_call": {"name": "search", "arguments": {"query": "again"}}, "reply": "Best I can do."}
    )
    completion, rid = ask(client, content=f"loop [[fake:{loop}]]")
    assert completion.choices[0].message.content == "Best I can do."
    assert len(fake.requests) == 3 and len(searxng.requests) == 2
    assert "tools" in fake.requests[1]["json"] and "tools" not in fake.requests[2]["json"]
    prompt, completion_tokens = upstream_sum(fake)
    log = wait_usage(rid)
    assert (log.prompt_tokens, log.completion_tokens) == (prompt, completion_tokens)


def test_crawler_url_resolving_to_a_private_address_is_refused(client, fake, searxng, monkeypatch):
    resolver = FakeResolver({"intranet.test": ["10.0.0.7"]})
    monkeypatch.setattr(outbound, "base_resolver", lambda: resolver)
    fake.script(
        {"tool_call": {"name": "crawler", "arguments": {"url": "http://intranet.test/admin"}}},
        {"reply": "Could not read it."},
    )
    completion, _ = ask(client)
    assert completion.choices[0].message.content == "Could not read it."
    result = json.loads(fake.requests[1]["json"]["messages"][-1]["content"])
    assert "not fetched" in result["error"]
    assert resolver.asked == [("intranet.test", 80)]


def test_crawler_redirect_to_non_allow_listed_loopback_is_refused(client, fake, searxng, settings):
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{searxng.port}"]
    moved = f"{searxng.url}/redirect?to=http://localhost:{searxng.port}/page/python"
    fake.script({"tool_call": {"name": "crawler", "arguments": {"url": moved}}}, {"reply": "ok"})
    ask(client)
    assert "error" in json.loads(fake.requests[1]["json"]["messages"][-1]["content"])
    assert [r["path"] for r in searxng.requests] == ["/redirect"]  # the target was never asked


def test_backend_down_gives_the_model_an_error_not_a_5xx(client, fake, searxng):
    searxng.script({"fail": 500})
    fake.script(SEARCH, {"reply": "No results: {tool_result}"})
    completion, _ = ask(client)
    assert "the search backend answered 500" in completion.choices[0].message.content


def test_refusals_of_the_field(client, settings):
    with pytest.raises(openai.BadRequestError, match="one choice"):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            n=2,
            extra_body={"web_search": True},
        )
    with pytest.raises(openai.BadRequestError, match="boolean"):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"web_search": "yes"},
        )
    settings.WEB_SEARCH_URL = ""
    with pytest.raises(openai.BadRequestError, match="not configured"):
        ask(client)


def test_web_search_false_is_dropped_and_the_request_is_plain(client, fake):
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_body={"web_search": False}
    )
    assert completion.choices[0].message.content
    assert "web_search" not in fake.requests[0]["json"] and "tools" not in fake.requests[0]["json"]


def test_a_failing_later_round_still_bills_the_rounds_the_provider_answered(client, fake, searxng):
    """Round one is answered (and billed by the provider), round two fails: the client gets
    the failure, and the usage log charges round one's tokens, not nothing."""
    fake.script(SEARCH, {"status": 400})
    with pytest.raises(openai.BadRequestError) as failure:
        ask(client)
    rid = failure.value.response.headers["x-request-id"]
    first = fake.requests[0]["usage"]
    log = wait_usage(rid)
    assert log.status_code == 400
    assert (log.prompt_tokens, log.completion_tokens) == (first["prompt_tokens"], first["completion_tokens"])
    assert log.cost > 0


# --- streaming ------------------------------------------------------------------------


def ask_stream(client, content="what is python?", **extra):
    return client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": content}],
        stream=True,
        extra_body={"web_search": True},
        **extra,
    )


def test_stream_final_round_arrives_live_cited_with_the_usage_of_all_rounds(client, fake, searxng):
    page = searxng.page_url("python")
    reply = f"Python is a programming language, see {page} for more."
    fake.script(SEARCH, {"reply": reply, "chunk_delay": 0.1})
    text, live, chunks = "", 0, []
    for chunk in ask_stream(client, stream_options={"include_usage": True}):
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            requests = fake.requests
            if len(requests) == 2 and requests[1]["ended_at"] is None:
                live += 1  # the upstream is still writing the answer
    assert text == reply
    assert live >= 3
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1
    (final,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final.choices[0].finish_reason == "stop"
    (annotation,) = final.choices[0].delta.model_extra["annotations"]
    cited = annotation["url_citation"]
    assert annotation["type"] == "url_citation" and cited["url"] == page
    assert text[cited["start_index"] : cited["end_index"]] == page
    usage = chunks[-1].usage
    prompt, completion_tokens = upstream_sum(fake)
    assert not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion_tokens)
    assert [r["json"]["stream"] for r in fake.requests] == [True, True]


def test_stream_without_include_usage_has_no_usage_chunk(client, fake, searxng):
    fake.script(SEARCH, {"reply": "Done."})
    chunks = list(ask_stream(client))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Done."


def test_stream_client_tool_call_ends_the_loop(client, fake, searxng):
    fake.script({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}})
    chunks = list(ask_stream(client, tools=[WEATHER]))
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    (call,) = calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert len(fake.requests) == 1 and not searxng.requests


def raw_stream(gateway, key):
    return httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "what is python?"}],
            "stream": True,
            "web_search": True,
        },
        timeout=20,
    )


@pytest.fixture
def stream_key(gateway, world, fake, searxng):
    world.route(world.provider(fake), "gpt-4o-mini")
    return world.key(world.user("bob"))


def test_stream_stays_alive_with_comments_while_searching(gateway, stream_key, fake, searxng, settings):
    settings.WEB_SEARCH_KEEPALIVE = 0.2
    searxng.script({"stall": 1.2})
    fake.script(SEARCH, {"reply": "Found it."})
    with raw_stream(gateway, stream_key) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    first_text = next(i for i, line in enumerate(lines) if "Found" in line)
    pings = [i for i, line in enumerate(lines) if line == ": keep-alive"]
    assert len(pings) >= 3 and max(pings) < first_text
    assert lines[-1] == "data: [DONE]"


def test_stream_disconnect_while_searching_stops_the_loop_and_bills_round_one(
    gateway, stream_key, fake, searxng, settings
):
    settings.WEB_SEARCH_KEEPALIVE = 0.2
    searxng.script({"stall": 3})
    fake.script(SEARCH, {"reply": "never asked"})
    with raw_stream(gateway, stream_key) as response:
        rid = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line == ": keep-alive":
                break  # the gateway is searching: leave
    log = wait_usage(rid)
    first = fake.requests[0]["usage"]
    assert log.status_code == 499 and log.client_disconnected
    assert (log.prompt_tokens, log.completion_tokens) == (first["prompt_tokens"], first["completion_tokens"])
    # 1 per 1M prompt tokens, 2 per 1M completion tokens (World's price)
    assert log.cost == first["prompt_tokens"] * 1_000 + first["completion_tokens"] * 2_000
    time.sleep(0.3)
    assert len(fake.requests) == 1  # no second round after the client left


def test_stream_failing_later_round_ends_the_stream_with_an_error(client, fake, searxng):
    fake.script(SEARCH, {"status": 400})
    with pytest.raises(openai.APIError):
        list(ask_stream(client))
    assert len(fake.requests) == 2


# --- /v1/completions (wrapped as chat) -----------------------------------------------


def test_completions_web_search_wraps_the_prompt_as_chat(client, fake, searxng):
    page = searxng.page_url("python")
    fake.script(SEARCH, {"reply": f"Python: {page}"})
    completion = client.completions.create(
        model="gpt-4o-mini", prompt="what is python?", extra_body={"web_search": True}
    )
    assert completion.object == "text_completion" and completion.choices[0].text == f"Python: {page}"
    assert completion.choices[0].finish_reason == "stop"
    assert [r["path"] for r in fake.requests] == ["/v1/chat/completions"] * 2
    assert fake.requests[0]["json"]["messages"] == [{"role": "user", "content": "what is python?"}]
    prompt, completion_tokens = upstream_sum(fake)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, completion_tokens)
    # streamed: text_completion chunks, the usage of both rounds when asked for
    fake.script(SEARCH, {"reply": "Streamed answer here."})
    chunks = list(
        client.completions.create(
            model="gpt-4o-mini",
            prompt="what is python?",
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"web_search": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Streamed answer here."
    assert all(c.object == "text_completion" for c in chunks)
    later = fake.requests[2:]
    assert chunks[-1].usage.completion_tokens == sum(r["usage"]["completion_tokens"] for r in later)


def test_search_backend_stopped_or_stalled_the_answer_still_comes(client, fake, searxng, settings):
    """Failure policy: a backend that is not running (its port closed) or answers after
    WEB_SEARCH_TIMEOUT gives the model an error tool result; the client gets an answer."""
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    settings.WEB_SEARCH_URL = f"http://127.0.0.1:{closed}"
    fake.script(SEARCH, {"reply": "Without results: {tool_result}"})
    completion, _ = ask(client)
    assert "could not be reached" in completion.choices[0].message.content
    settings.WEB_SEARCH_URL = searxng.url
    settings.WEB_SEARCH_TIMEOUT = 1
    searxng.script({"stall": 3})
    fake.script(SEARCH, {"reply": "Without results: {tool_result}"})
    started = time.monotonic()
    completion, _ = ask(client)
    assert "could not be reached (TimeoutError)" in completion.choices[0].message.content
    assert time.monotonic() - started < 3
