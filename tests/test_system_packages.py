"""`make test`'s first step (tests/system_packages.py): what the suite drives must be there;
as root it is installed, otherwise one line says what to install and how."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import system_packages

ROOT = Path(__file__).resolve().parent.parent
GONE = (
    "the browser tests",
    ("/nonexistent/chromium", "/nonexistent/chromedriver"),
    ("chromium", "chromium-driver"),
)


def test_not_root_and_something_missing_stops_with_one_line(monkeypatch):
    monkeypatch.setattr(system_packages, "NEEDED", (GONE, system_packages.NODE))
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(system_packages.shutil, "which", lambda name: f"/usr/bin/{name}")
    line = system_packages.preflight()
    assert line == (
        "make test: chromium chromium-driver missing (the browser tests); install them first: "
        "sudo apt-get install -y --no-install-recommends chromium chromium-driver"
    )
    assert "\n" not in line


def test_everything_there_says_nothing(monkeypatch):
    monkeypatch.setattr(system_packages, "NEEDED", (("x", (sys.executable,), ("python3",)),))
    assert system_packages.preflight() is None


def test_make_test_runs_the_check_first():
    """The target calls the check before pytest and stops when it fails (make -n shows the
    recipe without running it)."""
    recipe = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout.splitlines()
    check = next(i for i, line in enumerate(recipe) if "-m tests.system_packages" in line)
    run = next(i for i, line in enumerate(recipe) if "-m pytest" in line)
    assert check < run and "|| " in recipe[check] and "&&" not in recipe[check]
