"""Micro-benchmark of the Prometheus hook on the relay's hot path (docs/decisions.md).

    .venv/bin/python -m bench.metrics_hook [--events 200000]

Times ``METRICS.observe(event)`` (the one call per request) on usage events shaped like
the bench's (a few models and providers, a failover now and then), then the flush that
moves the tallies into prometheus-client once a second, per event it covered; with
``PROMETHEUS_MULTIPROC_DIR`` set (as under gunicorn) the flush writes the mmap files.
For comparison it times what calling prometheus-client per request would cost.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()
    from billing.events import UsageEvent
    from observability.metrics import LATENCY, REQUESTS, TOKENS, RelayMetrics

    def event(i: int) -> UsageEvent:
        failover = i % 50 == 0
        tried = [{"provider": 1, "name": "a", "status": 502, "error": "x", "ms": 3}] if failover else []
        tried.append({"provider": 2 + i % 2, "name": "b", "status": 200, "error": "", "ms": 1})
        return UsageEvent(
            request_id=f"r{i}", ts=time.time(), user_id=1, key_id=1, provider_id=2 + i % 2, price_id=1,
            request_type="chat", endpoint="/v1/chat/completions", model_requested=f"model-{i % 4}",
            model_upstream=f"model-{i % 4}", model_billed=f"model-{i % 4}", providers_tried=tried,
            stream=i % 3 == 0, prompt_tokens=12, completion_tokens=9, cached_tokens=0, usage_estimated=False,
            cost=30_000, status_code=200, error="", latency_ms=i % 700, ttft_ms=i % 300,
            client_ip="127.0.0.1", request_bytes=80, response_bytes=300, client_disconnected=False,
        )  # fmt: skip

    events = [event(i) for i in range(args.events)]
    hook = RelayMetrics()
    started = time.perf_counter()
    for item in events:
        hook.observe(item)
    observe_us = (time.perf_counter() - started) / len(events) * 1e6

    # a flush per second covers about one second of traffic: time it at 3,500 events (one
    # worker's share of ~7,000 req/s on 2 workers)
    per_flush = 3_500
    flushes = 0
    flush_seconds = 0.0
    for start in range(0, len(events), per_flush):
        for item in events[start : start + per_flush]:
            hook.observe(item)
        tallies, failures = hook.take()
        hook.names.update({1: "a", 2: "b", 3: "c"})
        began = time.perf_counter()
        hook.export(
            tallies, failures, states={1: (0, 0), 2: (0, 1), 3: (0, 0)}, buffered=0,
            known_models=lambda: [f"model-{m}" for m in range(4)], endpoint_label=str, currency="USD",
        )  # fmt: skip
        flush_seconds += time.perf_counter() - began
        flushes += 1
    flush_us = flush_seconds / len(events) * 1e6

    # the alternative: prometheus-client calls on the request path
    started = time.perf_counter()
    for item in events:
        labels = (item.model_billed, "b", item.endpoint, "200")
        REQUESTS.labels(*labels).inc()
        LATENCY.labels(*labels).observe(item.latency_ms / 1000)
        TOKENS.labels(item.model_billed, "b", "prompt").inc(item.prompt_tokens)
        TOKENS.labels(item.model_billed, "b", "completion").inc(item.completion_tokens)
    direct_us = (time.perf_counter() - started) / len(events) * 1e6

    mode = "multiprocess files" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "in-process registry"
    print(f"{len(events)} events, {mode}")
    print(f"observe (the hot-path call): {observe_us:.2f} us per request")
    print(f"flush (once a second, off the request path): {flush_us:.3f} us per request ({flushes} flushes)")
    print(f"prometheus-client per request instead (4 of the 9 updates): {direct_us:.2f} us per request")


if __name__ == "__main__":
    main()
