"""Claude Code's WebSearch through the gateway over an OpenAI-type upstream: Claude Code
sends Anthropic's web_search_20250305 server tool in a request of its own; the gateway runs
the search (the fake SearXNG), answers with server_tool_use / web_search_tool_result blocks
and cited text, and Claude Code hands the links to its model. The pinned Claude Code, the
fake upstream and the fake SearXNG all run on loopback (see test_claude_code.py)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import run as _run
from tests.e2e.test_claude_code import MODELS, _environment, claude  # noqa: F401
from tests.test_relay_web_search import _searxng_session, searxng  # noqa: F401

pytestmark = pytest.mark.e2e


def test_claude_code_web_search_runs_on_an_openai_upstream(gateway, world, fake, searxng, claude, tmp_path):  # noqa: F811
    provider = world.provider(fake, type="openai", api_key="sk-upstream")
    for model in MODELS:
        world.route(provider, model)
    key = world.key(world.user("claude-searcher"))
    page = searxng.page_url("python")
    # the main turn calls WebSearch, then repeats what the tool returned
    directive = {
        "tool_calls": [{"name": "WebSearch", "arguments": {"query": "python language"}}],
        "after_tool_result": {"reply": "Search said: {tool_result}"},
    }
    prompt = f"Search the web: what is python? [[fake:{json.dumps(directive)}]]"
    # Claude Code's own search request (no directive in it): the model searches, then cites
    fake.script(
        {"tool_call": {"name": "web_search", "arguments": {"query": "python language"}}},
        {"reply": f"Python is a programming language ({page})."},
    )
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    command = [claude, "-p", prompt, "--output-format", "json", "--allowedTools", "WebSearch"]
    done = _run(command, timeout=120, cwd=work, env=_environment(home, gateway.url, key))

    sent = fake.requests
    diagnostics = f"claude exited {done.returncode}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}\n" + str(
        [
            (r["path"], [t.get("function", t).get("name") for t in r["json"].get("tools") or []][:3])
            for r in sent
        ]
    )
    assert done.returncode == 0, diagnostics
    result = json.loads(done.stdout)
    assert result["is_error"] is False, diagnostics
    # the search ran here, and its link reached Claude Code's model and its answer
    assert searxng.requests and searxng.requests[0]["query"]["q"] == "python language", diagnostics
    assert page in result["result"], diagnostics
    searching = [
        r for r in sent if [t["function"]["name"] for t in r["json"].get("tools") or []] == ["web_search"]
    ]
    assert len(searching) == 2, diagnostics  # the search round and the answer round
    assert all("web_search_20250305" not in json.dumps(r["json"]) for r in sent)
