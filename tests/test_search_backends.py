"""The hosted web-search backends (providers/search/), each against a loopback fake that
speaks its API's JSON (tests/fakes/search_apis.py): the request it sends (auth, query,
result count), the normalised and capped results, news, failures as SearchError; and one
backend end to end through the gateway."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from providers.search import SearchError, configured_backend
from tests.fakes.search_apis import ITEMS, KEY, NEWS, FakeSearchApi

KINDS = ["brave", "tavily", "serper", "google", "exa"]


@pytest.fixture(scope="module")
def _apis():
    servers = {kind: FakeSearchApi(kind).start() for kind in KINDS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(params=KINDS)
def api(request, _apis, settings):
    server = _apis[request.param]
    server.reset()
    settings.WEB_SEARCH_BACKEND = request.param
    settings.WEB_SEARCH_URL = server.url
    settings.WEB_SEARCH_API_KEY = KEY
    settings.WEB_SEARCH_ENGINE_ID = "engine-1"
    settings.WEB_SEARCH_MAX_RESULTS = 2
    settings.OUTBOUND_ALLOWED_HOSTS = []  # the configured backend is trusted, nothing else
    yield server
    server.reset()


def run(coro):
    return asyncio.run(coro)


def test_search_sends_the_api_request_and_normalises_the_results(api):
    results = run(configured_backend().search("python"))
    # capped at WEB_SEARCH_MAX_RESULTS; Exa's snippet is cut from the page text it sends
    assert [(r.title, r.url) for r in results] == [(title, url) for title, url, _ in ITEMS[:2]]
    assert all(r.snippet.startswith(snippet) for r, (_, _, snippet) in zip(results, ITEMS, strict=False))
    (sent,) = api.requests
    expected = {
        "brave": ("GET", "/res/v1/web/search", {"q": "python", "count": "2"}, None),
        "tavily": ("POST", "/search", {}, {"query": "python", "max_results": 2, "topic": "general"}),
        "serper": ("POST", "/search", {}, {"q": "python", "num": 2}),
        "google": (
            "GET",
            "/customsearch/v1",
            {"key": KEY, "cx": "engine-1", "q": "python", "num": "2"},
            None,
        ),
        "exa": (
            "POST",
            "/search",
            {},
            {
                "query": "python",
                "numResults": 2,
                "type": "auto",
                "contents": {"text": {"maxCharacters": 4000}},
            },
        ),
    }[api.kind]
    assert (sent["method"], sent["path"], sent["query"], sent["json"]) == expected


def test_news(api):
    results = run(configured_backend().news("python"))
    sent = api.requests[0]
    # Google has no news vertical: the same results, newest first
    rows = ITEMS[:2] if api.kind == "google" else NEWS
    assert [(r.title, r.url) for r in results] == [(title, url) for title, url, _ in rows]
    if api.kind == "exa":
        assert sent["json"]["category"] == "news"
        assert results[0].content.startswith("Python 3.14 is out.")  # Exa sends page text too
    if api.kind == "google":
        assert sent["query"]["sort"] == "date"


def test_a_wrong_key_or_a_failing_api_is_a_search_error(api, settings):
    settings.WEB_SEARCH_API_KEY = "wrong"
    with pytest.raises(SearchError, match="answered 401"):
        run(configured_backend().search("python"))
    settings.WEB_SEARCH_API_KEY = KEY
    api.script({"fail": 503})
    with pytest.raises(SearchError, match="answered 503"):
        run(configured_backend().search("python"))


def test_a_hosted_backend_without_a_key_is_not_configured(settings):
    settings.WEB_SEARCH_BACKEND = "brave"
    settings.WEB_SEARCH_URL = ""
    settings.WEB_SEARCH_API_KEY = ""
    assert configured_backend() is None
    settings.WEB_SEARCH_API_KEY = "k"
    assert configured_backend().url == "https://api.search.brave.com"  # the public API by default


def test_google_without_results_and_without_engine_id(_apis, settings):
    server = _apis["google"]
    settings.WEB_SEARCH_BACKEND = "google"
    settings.WEB_SEARCH_URL = server.url
    settings.WEB_SEARCH_API_KEY = KEY
    settings.WEB_SEARCH_ENGINE_ID = "engine-1"
    assert run(configured_backend().search("nothing")) == []
    settings.WEB_SEARCH_ENGINE_ID = ""
    with pytest.raises(SearchError, match="WEB_SEARCH_ENGINE_ID"):
        run(configured_backend().search("python"))


def test_through_the_gateway_with_brave(gateway, world, fake, _apis, settings):
    server = _apis["brave"]
    server.reset()
    settings.WEB_SEARCH_BACKEND = "brave"
    settings.WEB_SEARCH_URL = server.url
    settings.WEB_SEARCH_API_KEY = KEY
    settings.OUTBOUND_ALLOWED_HOSTS = []
    world.route(world.provider(fake), "gpt-4o-mini")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=world.key(world.user("hal")), max_retries=0)
    fake.script(
        {"tool_call": {"name": "search", "arguments": {"query": "python"}}},
        {"reply": "See https://example.org/python for details."},
    )
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "python?"}],
        extra_body={"web_search": True},
    )
    (annotation,) = completion.choices[0].message.annotations
    assert annotation.url_citation.url == "https://example.org/python"
    assert annotation.url_citation.title == "Python (programming language)"
    results = json.loads(fake.requests[1]["json"]["messages"][-1]["content"])["results"]
    assert [r["url"] for r in results] == [url for _, url, _ in ITEMS[: len(results)]]
    assert server.requests[0]["headers"]["X-Subscription-Token"] == KEY
