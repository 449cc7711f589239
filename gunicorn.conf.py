"""gunicorn reads this file from the working directory (`make serve`, the Docker image).

Without REDIS_URL the cache, the counters and the config version stamp live in each
process: with several workers every rate limit, quota and concurrency limit would be
multiplied by the number of workers, and an operator's change would reach one worker only.
So several workers need Redis; one worker runs without it.

Prometheus metrics (observability/metrics.py): each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR and a scrape of any worker reads them all. The directory is the
operator's when set (its old files are removed at start), else a temporary one removed at
exit; the variable is set here, in the arbiter, before any worker starts and imports
prometheus-client. A dead worker's gauges are dropped when it exits.
"""

import glob
import os
import shutil
import tempfile

worker_class = "gateway_project.workers.UvicornWorker"

_METRICS_DIR_MADE_HERE: list[str] = []


def _metrics_dir() -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):  # values of a previous run
            os.remove(path)
    else:
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        _METRICS_DIR_MADE_HERE.append(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def on_starting(server):
    if server.cfg.workers > 1 and not os.environ.get("REDIS_URL", "").strip():
        raise SystemExit(
            f"gunicorn: {server.cfg.workers} workers need REDIS_URL (shared counters and cache); "
            "without Redis every limit would count per worker. Set REDIS_URL or run WORKERS=1."
        )
    _metrics_dir()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    for directory in _METRICS_DIR_MADE_HERE:
        shutil.rmtree(directory, ignore_errors=True)
