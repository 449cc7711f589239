"""Debian packages the end-to-end tests drive (Chromium, Node.js): installed with apt-get
when missing, as `make test` promises on a bare machine with only python3 and make.
Nothing comes from anywhere but the distribution's package registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# (what needs it, the paths that must exist, the Debian packages that provide them)
CHROMIUM = (
    "the browser tests",
    ("/usr/bin/chromium", "/usr/bin/chromedriver"),
    ("chromium", "chromium-driver"),
)
NODE = ("the Claude Code and Codex tests", ("node", "npm"), ("nodejs", "npm"))
NEEDED = (CHROMIUM, NODE)


class Unavailable(Exception):
    """The packages are missing and cannot be installed here; the text says why."""


def _missing(paths: tuple[str, ...]) -> list[str]:
    return [p for p in paths if not (os.path.exists(p) if "/" in p else shutil.which(p))]


def ensure(paths: tuple[str, ...], packages: tuple[str, ...]) -> None:
    """Make sure every path in ``paths`` exists (executables by name are looked up on PATH),
    installing ``packages`` with apt-get when one is missing."""

    def missing() -> list[str]:
        return _missing(paths)

    if not missing():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise Unavailable(
            f"{', '.join(missing())} missing, and apt-get needs root: apt-get install {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    )
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=900, env=env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(f"{' '.join(step)} timed out") from None
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(step)} failed: {done.stderr[-500:]}")
    if missing():
        raise Unavailable(
            f"apt-get installed {' '.join(packages)} but {', '.join(missing())} is still missing"
        )


def preflight() -> str | None:
    """Before ``make test``: install what is missing when root; otherwise the one line that
    names the missing packages and the command that installs them (None: all there)."""
    wanted = [(why, packages) for why, paths, packages in NEEDED if _missing(paths)]
    if not wanted:
        return None
    packages = tuple(name for _, names in wanted for name in names)
    uses = " and ".join(why for why, _ in wanted)
    if shutil.which("apt-get") is None:
        return f"make test: {' '.join(packages)} missing ({uses}); install them with your package manager"
    if os.geteuid() != 0:
        return (
            f"make test: {' '.join(packages)} missing ({uses}); install them first: "
            f"sudo apt-get install -y --no-install-recommends {' '.join(packages)}"
        )
    for _, paths, names in NEEDED:
        try:
            ensure(paths, names)
        except Unavailable as exc:
            return f"make test: {exc}"
    return None


if __name__ == "__main__":
    problem = preflight()
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(1)
