"""Codex CLI (npm ``@openai/codex``, pinned in tests/e2e/node) against the real gateway's
``/v1/responses``, with a chat-completions-only OpenAI upstream and an Anthropic upstream
(the loopback fake, which does not speak the Responses API: the gateway translates).

``codex exec`` with a custom model provider (``wire_api = "responses"``) asks the gateway for
a turn; the fake answers with a call of Codex's shell tool (``exec_command``), Codex runs the
command and sends its ``function_call_output`` back through the gateway, and the fake answers
with the tool's output. The answer Codex prints therefore holds a value only the shell
computed.

Setup: the e2e conftest's ``npm ci`` installs the pinned package (its native binary comes in
the npm platform package ``@openai/codex-linux-x64``; nothing else is downloaded).

Network: Codex may only reach loopback. Its curated-plugin sync (github.com,
api.github.com) and ChatGPT apps/remote plugins (chatgpt.com) are switched off in its
config, update checks and analytics too, and HTTP(S)_PROXY point at a closed loopback port,
so a stray call dies on this machine. When strace is installed the OpenAI run is traced and
any connect() to a non-loopback address fails the test.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import PINNED, dead_proxies, run
from tests.e2e.test_claude_code import wait_usage_logs

pytestmark = pytest.mark.e2e

VERSION = PINNED["@openai/codex"]
MODEL = "gpt-5.5"  # in Codex's bundled model catalog: no "model metadata not found" fallback
KEY_VARIABLE = "GATEWAY_API_KEY"
TIMEOUT = 120  # seconds for one codex run
# Headless tool use: never ask for approval, and no sandbox (Codex's bwrap sandbox needs user
# namespaces a container may not give; the command run is the fake's fixed echo).
FLAGS = (
    "--skip-git-repo-check",
    "--dangerously-bypass-approvals-and-sandbox",
    "--ephemeral",
    "--color",
    "never",
)


def config_toml(base_url: str) -> str:
    """$CODEX_HOME/config.toml: the gateway as a custom Responses provider, no retries (a
    failure shows at once), and everything that would reach out to the internet off."""
    return f"""\
model = "{MODEL}"
model_provider = "gateway"
check_for_update_on_startup = false

[model_providers.gateway]
name = "Gateway"
base_url = "{base_url}/v1"
env_key = "{KEY_VARIABLE}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false
"""


def _environment(home: Path, key: str) -> dict[str, str]:
    """A clean environment: nothing of the caller's leaks in (no OPENAI_*, no proxies). TMPDIR
    is a sibling of CODEX_HOME (Codex refuses to put its helper links under TMPDIR)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "TMPDIR": str(home / "tmp"),
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        KEY_VARIABLE: key,
        **dead_proxies(),
    }


@pytest.fixture(scope="session")
def codex(node_bin, tmp_path_factory) -> str:
    """The pinned Codex CLI executable (installed by the e2e conftest's ``npm ci``)."""
    binary = node_bin / "codex"
    if not binary.exists():
        pytest.fail(f"npm ci did not install Codex CLI {VERSION}", pytrace=False)
    home = tmp_path_factory.mktemp("codex-version")
    version = run([str(binary), "--version"], timeout=60, env=_environment(home, ""))
    assert version.stdout.strip() == f"codex-cli {VERSION}", version.stdout + version.stderr
    return str(binary)


def run_codex(codex: str, base_url: str, key: str, prompt: str, tmp_path: Path, trace: Path | None = None):
    """``codex exec PROMPT`` in an empty work directory with its own HOME and CODEX_HOME;
    returns the process and the last message it printed (``-o``; None if not written). With
    ``trace`` it runs under ``strace -f -e trace=connect`` writing there."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    for directory in (home / ".codex", home / "tmp", work):
        directory.mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(config_toml(base_url))
    last = tmp_path / "last-message.txt"
    command = [codex, "exec", *FLAGS, "--output-last-message", str(last), prompt]
    if trace is not None:
        command = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *command]
    done = run(command, timeout=TIMEOUT, cwd=work, env=_environment(home, key))
    return done, (last.read_text() if last.exists() else None)


def agent_prompt() -> tuple[str, str]:
    """A prompt that makes the fake upstream call Codex's exec_command tool with a command
    whose output (the marker) is not in the prompt, then answer with the tool's output."""
    a, b = random.randint(1000, 9999), random.randint(1000, 9999)
    command = f"echo codex-e2e-$(({a}*{b}))"
    directive = {
        "tool_call": {"name": "exec_command", "arguments": {"cmd": command}},
        "after_tool_result": {"reply": "The command printed: {tool_result}"},
    }
    prompt = f"Run this shell command and tell me what it printed: {command}"
    return f"{prompt} [[fake:{json.dumps(directive)}]]", f"codex-e2e-{a * b}"


LOOPBACK_CONNECT = re.compile(r'sin6?_addr=inet_(?:addr\("127\.\d+\.\d+\.\d+"\)|pton\(AF_INET6, "::1"\))')


def foreign_connects(trace: Path) -> list[str]:
    """The connect() calls in an strace log to an IPv4/IPv6 address that is not loopback."""
    lines = trace.read_text().splitlines()
    inet = [line for line in lines if "connect(" in line and ("AF_INET" in line)]
    return [line for line in inet if not LOOPBACK_CONNECT.search(line)]


@pytest.mark.parametrize("provider_type", ["openai", "anthropic"])
def test_codex_runs_a_shell_command_through_the_gateway(gateway, world, fake, codex, tmp_path, provider_type):
    provider = world.provider(fake, type=provider_type, api_key="sk-upstream")
    world.route(provider, MODEL)
    user = world.user("codex-coder")
    prompt, marker = agent_prompt()
    trace = tmp_path / "connect.strace" if provider_type == "openai" and shutil.which("strace") else None

    done, answer = run_codex(codex, gateway.url, world.key(user), prompt, tmp_path, trace)

    sent = fake.requests
    seen = [(r["method"], r["path"], r["status"]) for r in sent]
    diagnostics = (
        f"codex exited {done.returncode}, answered {answer!r}\nstdout: {done.stdout[-2000:]}\n"
        f"stderr: {done.stderr[-3000:]}\nupstream saw: {seen}"
    )
    assert done.returncode == 0, diagnostics
    assert answer is not None and marker in answer, diagnostics
    # the first turn asked for the tool; the second carried its output back upstream
    assert len(sent) >= 2, diagnostics
    assert marker not in json.dumps(sent[0]["json"])
    assert marker in json.dumps(sent[1]["json"]), diagnostics
    assert all(r["status"] == 200 for r in sent), diagnostics
    logs = wait_usage_logs(user, len(sent))
    assert len(logs) >= len(sent), [(log.status_code, log.error) for log in logs]
    assert {log.model_requested for log in logs} == {MODEL}
    assert all(log.status_code == 200 and log.completion_tokens > 0 for log in logs), [
        (log.status_code, log.error) for log in logs
    ]
    if trace is not None:
        assert not foreign_connects(trace), foreign_connects(trace)


@pytest.mark.parametrize("provider_type", ["openai", "anthropic"])
def test_codex_applies_a_patch_through_the_gateway(gateway, world, fake, codex, tmp_path, provider_type):
    """Codex's ``apply_patch`` is a free-form ``custom`` tool (a lark grammar, no JSON): the
    gateway offers it upstream as a function with one ``input`` string and returns the call
    as a ``custom_tool_call``, which Codex applies and answers with a
    ``custom_tool_call_output``."""
    provider = world.provider(fake, type=provider_type, api_key="sk-upstream")
    world.route(provider, MODEL)
    user = world.user("codex-patcher")
    marker = f"codex-patch-{random.randint(100000, 999999)}"
    patch = f"*** Begin Patch\n*** Add File: hello.txt\n+{marker}\n*** End Patch\n"
    directive = {
        "tool_call": {"name": "apply_patch", "arguments": {"input": patch}},
        "after_tool_result": {"reply": "apply_patch said: {tool_result}"},
    }

    done, answer = run_codex(
        codex, gateway.url, world.key(user), f"Create hello.txt [[fake:{json.dumps(directive)}]]", tmp_path
    )

    sent = fake.requests
    diagnostics = f"codex exited {done.returncode}, answered {answer!r}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode == 0, diagnostics
    assert (tmp_path / "work" / "hello.txt").read_text() == f"{marker}\n", diagnostics
    assert answer is not None and "A hello.txt" in answer, diagnostics
    assert [r["status"] for r in sent] == [200, 200], diagnostics
    assert "Success. Updated the following files" in json.dumps(sent[1]["json"]), diagnostics
