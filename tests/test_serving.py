"""How the gateway is served: several workers only with Redis (gunicorn.conf.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def _serve(workers: int, **env) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.Popen(
        [str(GUNICORN), "gateway_project.asgi:application", "-w", str(workers), "-b", "127.0.0.1:0"],
        cwd=ROOT,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_several_workers_without_redis_refuse_to_start_and_say_why():
    process = _serve(2)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "2 workers need REDIS_URL" in err


def test_one_worker_without_redis_starts(tmp_path):
    process = _serve(1, DATABASE_URL=f"sqlite:///{tmp_path}/serving.sqlite3")
    try:
        process.wait(timeout=3)  # still running after 3 s: started
        raise AssertionError(f"gunicorn exited: {process.stderr.read()[-500:]}")
    except subprocess.TimeoutExpired:
        pass
    finally:
        process.terminate()
        process.communicate(timeout=30)
