"""A relayed request leaves no reference cycles behind: what it made is freed by reference
counting when it ends. A cycle per request (a closure that refers to the object holding
it) made every request's objects wait for the garbage collector, whose collections then
took 8-19 ms each under load (docs/decisions.md, "Reference cycles").

The server runs in this process (the ``gateway`` fixture), so the collector, told to keep
what it would free (``gc.DEBUG_SAVEALL``), shows the cycles its requests left; objects of
the project's own modules are what is asserted, not those of the test's HTTP client."""

from __future__ import annotations

import collections
import gc

import httpx
import pytest

from tests.conftest import wait_usage
from tests.test_relay_web_search import _searxng_session, searxng  # noqa: F401

PROJECT = (
    "accounts",
    "billing",
    "conversations",
    "core",
    "gateway_project",
    "jobs",
    "keys",
    "observability",
    "providers",
    "quotas",
    "relay",
)
CHAT = {"model": "cycle-model", "messages": [{"role": "user", "content": "hello"}]}
REQUESTS = {
    "chat": ("/v1/chat/completions", CHAT),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "messages": ("/v1/messages", {**CHAT, "max_tokens": 50}),
    "messages-stream": ("/v1/messages", {**CHAT, "max_tokens": 50, "stream": True}),
    "responses": ("/v1/responses", {"model": "cycle-model", "input": "hello", "store": False}),
    "responses-stream": ("/v1/responses", {"model": "cycle-model", "input": "hello", "stream": True}),
    "responses-stored": ("/v1/responses", {"model": "cycle-model", "input": "hello"}),
    "completions": ("/v1/completions", {"model": "cycle-model", "prompt": "hello"}),
    "embeddings": ("/v1/embeddings", {"model": "cycle-model", "input": "hello"}),
}


def _module(obj) -> str:
    function = getattr(obj, "__func__", obj)  # a bound method: its function's module
    module = getattr(function, "__module__", None) if callable(function) else None
    return module or type(obj).__module__ or ""


class ProjectGarbage:
    """Within the block, what a collection finds unreachable is kept (not freed); ``found``
    counts the objects of the project's modules among it, by type."""

    def __enter__(self) -> ProjectGarbage:
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        self.found: collections.Counter = collections.Counter()
        return self

    def __exit__(self, *exc) -> None:
        try:
            gc.collect()
            self.found.update(
                f"{type(o).__qualname__} {getattr(o, '__qualname__', '')}".strip()
                for o in gc.garbage
                if _module(o).split(".")[0] in PROJECT
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()


@pytest.mark.parametrize("upstream_type", ["openai", "anthropic"])
def test_relayed_requests_leave_no_reference_cycles(gateway, world, fake, upstream_type):
    provider = world.provider(fake, type=upstream_type, api_key="sk-upstream")
    world.route(provider, "cycle-model")
    key = world.key()
    names = [n for n in REQUESTS if upstream_type == "openai" or n.split("-")[0] in ("chat", "messages")]
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=20) as client:

        def send(name: str) -> str:
            path, body = REQUESTS[name]
            response = client.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
            assert response.status_code == 200, (name, response.text)
            return response.headers["x-request-id"]

        for name in names:  # first requests fill caches (config, tokenizer): not per request
            wait_usage(send(name))
        found = {}
        for name in names:
            with ProjectGarbage() as garbage:
                for _ in range(3):
                    wait_usage(send(name))  # settled: the request has ended in the server
            found[name] = dict(garbage.found)
    assert {name: counts for name, counts in found.items() if counts} == {}


def test_refusals_and_failovers_leave_no_reference_cycles(gateway, world, fake, fake_b):
    """What a gateway under attack or an outage answers most: refusals (an unknown key, an
    unknown model, a malformed body) and a failover from a failing provider."""
    failing = world.provider(fake_b, name="cycle-failing", priority=10)
    steady = world.provider(fake, name="cycle-steady")
    world.route(failing, "cycle-model")
    world.route(steady, "cycle-model")
    key = world.key()
    cases = {
        "unknown key": ({"authorization": "Bearer sk-nobody"}, CHAT, 401),
        "unknown model": ({"authorization": f"Bearer {key}"}, {**CHAT, "model": "no-such-model"}, 404),
        "malformed body": ({"authorization": f"Bearer {key}"}, {"model": "cycle-model"}, 400),
        "failover": ({"authorization": f"Bearer {key}"}, CHAT, 200),
    }
    with httpx.Client(base_url=gateway.url, timeout=20) as client:

        def send(name: str) -> None:
            headers, body, status = cases[name]
            if name == "failover":
                fake_b.script({"status": 500})
            response = client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == status, (name, response.text)
            if status != 401:
                wait_usage(response.headers["x-request-id"])

        for name in cases:
            send(name)
        found = {}
        for name in cases:
            with ProjectGarbage() as garbage:
                for _ in range(3):
                    send(name)
            found[name] = dict(garbage.found)
    assert {name: counts for name, counts in found.items() if counts} == {}


def test_web_search_rounds_leave_no_reference_cycles(gateway, world, fake, searxng):  # noqa: F811
    """The gateway's own tool loop: a search round, then the answer (JSON and streamed)."""
    world.route(world.provider(fake), "cycle-model")
    key = world.key()
    search = {"tool_call": {"name": "search", "arguments": {"query": "python language"}}}
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=20) as client:

        def send(stream: bool) -> None:
            fake.script(search, {"reply": "Python is a programming language."})
            body = {**CHAT, "web_search": True, "stream": stream}
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert "programming" in response.text
            wait_usage(response.headers["x-request-id"])

        send(False)
        send(True)
        found = {}
        for stream in (False, True):
            with ProjectGarbage() as garbage:
                for _ in range(3):
                    send(stream)
            found["stream" if stream else "json"] = dict(garbage.found)
    assert {name: counts for name, counts in found.items() if counts} == {}
