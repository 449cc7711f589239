"""Claude Code (npm ``@anthropic-ai/claude-code``, pinned in tests/e2e/node) against the real
gateway, with an OpenAI, an Anthropic and a Gemini upstream (the loopback fake).

``claude -p`` on its default settings (all its tools, its default models) asks the gateway
for a turn; the fake upstream answers with a Bash tool call, Claude Code runs the command and
sends the tool result back through the gateway, and the fake answers with the command's
output. The answer that Claude Code prints therefore holds a value only the shell computed.

Setup: the pinned package is installed with ``npm ci`` into var/node (gitignored) once per
session; Node.js and npm come from apt-get when ``npm`` is missing. Nothing is downloaded but
from the package registries. The module is skipped only when npm cannot be had.

Network: Claude Code may only reach loopback. Every variable that stops its non-essential
traffic is set, and HTTP(S)_PROXY point at a closed loopback port, so a stray call dies on
this machine (NO_PROXY lets the gateway through).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from tests.conftest import settle_usage
from tests.e2e.conftest import PINNED, dead_proxies
from tests.e2e.conftest import run as _run

pytestmark = pytest.mark.e2e

VERSION = PINNED["@anthropic-ai/claude-code"]

# The models Claude Code asks for. Its default model is claude-opus-5-5; its small/fast model
# for side tasks is the main model when ANTHROPIC_BASE_URL is set and the key is not an
# Anthropic "sk-ant-api..." key (ours are "sk-gw-..."), else the haiku alias, claude-haiku-5-5.
MODELS = ("claude-opus-5-5", "claude-haiku-5-5")

# Everything that stops Claude Code's non-essential traffic (telemetry, error reports, update
# checks, feature flags, surveys, marketplace installs).
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_GROWTHBOOK": "1",
    "DISABLE_INSTALLATION_CHECKS": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
}
# Headless tool use: Claude Code refuses --dangerously-skip-permissions as root, so the Bash
# tool is allowed by a permission rule instead (this does not restrict the tools it offers).
PERMISSIONS = ("--allowedTools", "Bash")
TIMEOUT = 120  # seconds for one claude run


@pytest.fixture(scope="session")
def claude(node_bin, tmp_path_factory) -> str:
    """The pinned Claude Code executable (installed by the e2e conftest's ``npm ci``)."""
    binary = node_bin / "claude"
    if not binary.exists():
        pytest.fail(f"npm ci did not install Claude Code {VERSION}", pytrace=False)
    home = tmp_path_factory.mktemp("claude-version")
    version = _run([str(binary), "--version"], timeout=60, env=_environment(home, "", ""))
    assert version.stdout.startswith(f"{VERSION} "), version.stdout + version.stderr
    return str(binary)


def _environment(home: Path, base_url: str, key: str) -> dict[str, str]:
    """A clean environment: nothing of the caller's leaks in (no ANTHROPIC_*, no proxies)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "TMPDIR": str(home),
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": key,
        **QUIET,
        **dead_proxies(),
    }


def run_claude(claude: str, base_url: str, key: str, prompt: str, tmp_path: Path):
    """``claude -p PROMPT --output-format json`` in an empty work directory with its own
    HOME; returns the process and its parsed JSON result (None if stdout is not JSON)."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    command = [claude, "-p", prompt, "--output-format", "json", *PERMISSIONS]
    done = _run(command, timeout=TIMEOUT, cwd=work, env=_environment(home, base_url, key))
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    return done, result


def agent_prompt() -> tuple[str, str]:
    """A prompt that makes the fake upstream call Bash with a command whose output (the
    marker) is not in the prompt, then answer with the tool's output; and the marker."""
    a, b = random.randint(1000, 9999), random.randint(1000, 9999)
    command = f"echo cc-e2e-$(({a}*{b}))"
    directive = {
        "tool_call": {"name": "Bash", "arguments": {"command": command, "description": "Print a marker"}},
        "after_tool_result": {"reply": "The command printed: {tool_result}"},
    }
    prompt = f"Run this shell command with the Bash tool and tell me what it printed: {command}"
    return f"{prompt} [[fake:{json.dumps(directive)}]]", f"cc-e2e-{a * b}"


def wait_usage_logs(user, count: int, timeout: float = 10.0):
    from billing.models import UsageLog

    deadline = time.monotonic() + timeout
    while True:
        settle_usage()
        logs = list(UsageLog.objects.filter(user=user).order_by("created_at"))
        if len(logs) >= count or time.monotonic() > deadline:
            return logs
        time.sleep(0.05)


@pytest.mark.parametrize("provider_type", ["anthropic", "openai", "gemini"])
def test_claude_code_runs_bash_through_the_gateway(gateway, world, fake, claude, tmp_path, provider_type):
    provider = world.provider(fake, type=provider_type, api_key="sk-upstream")
    for model in MODELS:
        world.route(provider, model)
    user = world.user("claude-coder")
    prompt, marker = agent_prompt()

    done, result = run_claude(claude, gateway.url, world.key(user), prompt, tmp_path)

    sent = fake.requests
    said = f"{result.get('api_error_status')} {result.get('result')!r}" if result else done.stdout[-3000:]
    diagnostics = (
        f"claude exited {done.returncode}, said: {said}\nstderr: {done.stderr[-3000:]}\n"
        f"upstream saw: {[(r['method'], r['path'], r['status']) for r in sent]}"
    )
    assert done.returncode == 0, diagnostics
    assert result is not None and result["is_error"] is False, diagnostics
    assert marker in result["result"], diagnostics
    # the first turn asked for the tool; the second carried its output back upstream
    assert len(sent) >= 2, diagnostics
    assert marker not in json.dumps(sent[0]["json"])
    assert marker in json.dumps(sent[1]["json"]), diagnostics
    assert all(r["status"] == 200 for r in sent), diagnostics
    logs = wait_usage_logs(user, len(sent))
    assert len(logs) >= len(sent), [(log.status_code, log.error) for log in logs]
    assert {log.model_requested for log in logs} <= set(MODELS)
    assert all(log.status_code == 200 and log.completion_tokens > 0 for log in logs), [
        (log.status_code, log.error) for log in logs
    ]


def test_what_claude_code_sends(fake, claude, tmp_path):
    """Claude Code straight against the fake Anthropic upstream: the request shape the
    gateway must accept (a canary for a new pin). CLAUDE_CODE_RECORD=FILE saves the requests."""
    prompt, marker = agent_prompt()

    done, result = run_claude(claude, fake.url, "sk-test", prompt, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert marker in result["result"]
    sent = fake.requests
    if os.environ.get("CLAUDE_CODE_RECORD"):
        Path(os.environ["CLAUDE_CODE_RECORD"]).write_text(json.dumps(sent, indent=1))
    assert [(r["method"], r["path"], r["query"]) for r in sent] == [
        ("POST", "/v1/messages", {"beta": "true"})
    ] * 2
    first, second = (r["json"] for r in sent)
    headers = sent[0]["headers"]
    assert headers["x-api-key"] == "sk-test" and headers["anthropic-version"] == "2023-06-01"
    assert "claude-code-20250219" in headers["anthropic-beta"].split(",")
    assert first["model"] in MODELS and first["stream"] is True
    assert first["system"][0]["text"].startswith("x-anthropic-billing-header:")
    # a role "system" message inside messages, after the first user message
    assert [m["role"] for m in first["messages"]] == ["user", "system"]
    assert [m["role"] for m in second["messages"]] == ["user", "system", "assistant", "user"]
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert "Bash" in [tool["name"] for tool in first["tools"]]
