"""The real Node.js clients of the end-to-end tests (Claude Code, Codex CLI), pinned in
tests/e2e/node: one ``npm ci`` per lockfile installs them all into var/node (gitignored).

Node.js and npm come from apt-get when ``npm`` is missing; nothing is downloaded but from
the package registries (Codex's native binary is in its npm platform package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import system_packages

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parent / "node"  # package.json + package-lock.json
INSTALL = ROOT / "var" / "node"
PINNED = json.loads((PACKAGE / "package.json").read_text())["dependencies"]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused
LOOPBACK = "127.0.0.1,localhost"


def run(command: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """A bounded subprocess with captured text output and no stdin."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
    )


def dead_proxies() -> dict[str, str]:
    """HTTP(S)_PROXY at a closed loopback port (a stray call dies on this machine); NO_PROXY
    lets loopback (the gateway, the fake) through."""
    return {
        **{name: DEAD_PROXY for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
    }


def _ensure_npm() -> str:
    """The npm executable; installs Debian's nodejs and npm when missing."""
    try:
        system_packages.ensure(*system_packages.NODE[1:])
    except system_packages.Unavailable as exc:
        pytest.skip(f"npm cannot be had: {exc}")
    return shutil.which("npm")


@pytest.fixture(scope="session")
def node_bin() -> Path:
    """var/node/node_modules/.bin, installed by ``npm ci`` when the installed lockfile differs
    from the committed one."""
    bins = INSTALL / "node_modules" / ".bin"
    lock = (PACKAGE / "package-lock.json").read_bytes()
    installed = INSTALL / "package-lock.json"
    if not (bins.is_dir() and installed.exists() and installed.read_bytes() == lock):
        npm = _ensure_npm()
        if INSTALL.is_symlink():  # a link to another checkout's install: never write through it
            INSTALL.unlink()
        shutil.rmtree(INSTALL, ignore_errors=True)
        INSTALL.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(PACKAGE / name, INSTALL / name)
        env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
        done = run([npm, "ci", "--no-audit"], timeout=900, cwd=INSTALL, env=env)
        if done.returncode != 0:
            installed.unlink(missing_ok=True)
            pytest.fail(f"npm ci of {PINNED} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return bins
