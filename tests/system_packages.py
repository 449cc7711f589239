"""Debian packages the end-to-end tests drive (Chromium, Node.js): installed with apt-get
when missing, as `make test` promises on a bare machine with only python3 and make.
Nothing comes from anywhere but the distribution's package registry."""

from __future__ import annotations

import os
import shutil
import subprocess


class Unavailable(Exception):
    """The packages are missing and cannot be installed here; the text says why."""


def ensure(paths: tuple[str, ...], packages: tuple[str, ...]) -> None:
    """Make sure every path in ``paths`` exists (executables by name are looked up on PATH),
    installing ``packages`` with apt-get when one is missing."""

    def missing() -> list[str]:
        return [p for p in paths if not (os.path.exists(p) if "/" in p else shutil.which(p))]

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
