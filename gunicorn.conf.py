"""gunicorn reads this file from the working directory (`make serve`, the Docker image).

Without REDIS_URL the cache, the counters and the config version stamp live in each
process: with several workers every rate limit, quota and concurrency limit would be
multiplied by the number of workers, and an operator's change would reach one worker only.
So several workers need Redis; one worker runs without it.
"""

import os

worker_class = "gateway_project.workers.UvicornWorker"


def on_starting(server):
    if server.cfg.workers > 1 and not os.environ.get("REDIS_URL", "").strip():
        raise SystemExit(
            f"gunicorn: {server.cfg.workers} workers need REDIS_URL (shared counters and cache); "
            "without Redis every limit would count per worker. Set REDIS_URL or run WORKERS=1."
        )
