"""Codex CLI's built-in web_search tool through the gateway over a chat-only upstream: the
gateway runs the search (the fake SearXNG) instead of dropping the tool, streams
web_search_call items and the cited answer, and Codex prints it. Everything on loopback
(see test_codex.py)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_codex import MODEL, codex, run_codex  # noqa: F401
from tests.test_relay_web_search import _searxng_session, searxng  # noqa: F401

pytestmark = pytest.mark.e2e


def test_codex_web_search_runs_on_a_chat_upstream(gateway, world, fake, searxng, codex, tmp_path):  # noqa: F811
    world.route(world.provider(fake, type="openai", api_key="sk-upstream"), MODEL)
    key = world.key(world.user("codex-searcher"))
    page = searxng.page_url("python")
    directive = {
        "tool_call": {"name": "search", "arguments": {"query": "python language"}},
        "after_tool_result": {"reply": f"Python is a programming language, see {page}"},
    }
    prompt = f"Search the web: what is python? [[fake:{json.dumps(directive)}]]"

    done, answer = run_codex(codex, gateway.url, key, prompt, tmp_path)

    sent = fake.requests
    diagnostics = (
        f"codex exited {done.returncode}, answered {answer!r}\nstderr: {done.stderr[-3000:]}\n"
        f"upstream saw: {[(r['path'], r['status']) for r in sent]}"
    )
    assert done.returncode == 0, diagnostics
    assert answer is not None and page in answer, diagnostics
    assert searxng.requests and searxng.requests[0]["query"]["q"] == "python language", diagnostics
    # Codex offered its web_search tool: the gateway offered its own search tools instead
    names = [t["function"]["name"] for t in sent[0]["json"]["tools"]]
    assert {"search", "news", "crawler"} <= set(names), names
    assert len(sent) == 2, diagnostics
