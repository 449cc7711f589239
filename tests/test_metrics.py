"""GET /metrics: Prometheus text after real requests through the gateway, in the single
process of the embedded default and across two gunicorn workers (with Redis)."""

from __future__ import annotations

import concurrent.futures
import glob
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-test-token"


def scrape(url: str, token: str = TOKEN) -> dict[str, list]:
    """name -> samples of the scraped text (parsed with prometheus-client's own parser)."""
    response = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append(sample)
    return families


def value(families, name: str, **labels) -> float:
    return sum(
        s.value for s in families.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(url: str, name: str, expected: float, *more: dict, **labels) -> dict[str, list]:
    """Scrape until ``name`` reaches ``expected`` (workers export every second); each of
    ``more`` ({"name", "expected", **labels}) must have arrived too, since a request's
    tally can land in the export after the one that carried the others."""
    wanted = [(name, expected, labels)]
    for m in more:
        rest = {k: v for k, v in m.items() if k not in ("name", "expected")}
        wanted.append((m["name"], m["expected"], rest))
    deadline = time.monotonic() + 10
    while True:
        families = scrape(url)
        arrived = all(value(families, n, **lab) >= e for n, e, lab in wanted)
        if arrived or time.monotonic() > deadline:
            return families
        time.sleep(0.2)


def chat(url: str, key: str, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=20
    )


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []


def test_counters_and_histograms_by_model_provider_endpoint_and_status(
    gateway, world, fake, fake_b, metrics_token
):
    model = f"metrics-{uuid.uuid4().hex[:8]}"
    first = world.provider(fake_b, name=f"flaky-{model}", priority=10)
    second = world.provider(fake, name=f"steady-{model}")
    world.route(first, model=model)
    world.route(second, model=model)
    key = world.key()
    fake_b.script({"status": 500}, {"status": 429})  # two failovers to the steady provider
    for _ in range(2):
        assert chat(gateway.url, key, model).status_code == 200
    streamed = chat(gateway.url, key, model, stream=True)  # the flaky one answers again
    assert streamed.status_code == 200
    assert chat(gateway.url, key, "no-such-model-" + model).status_code == 404

    labels = {"model": model, "provider": second.name, "endpoint": "/v1/chat/completions", "status": "200"}
    flaky = {**labels, "provider": first.name}
    refused = {"model": "other", "provider": "", "endpoint": "/v1/chat/completions", "status": "404"}
    last = {"name": "gateway_requests_total", "expected": 1, **refused}  # the last request sent
    families = wait_for(gateway.url, "gateway_requests_total", 1, last, **flaky)
    assert value(families, "gateway_requests_total", **labels) == 2
    assert value(families, "gateway_requests_total", **flaky) == 1
    assert value(families, "gateway_request_duration_seconds_count", **labels) == 2
    assert value(families, "gateway_request_duration_seconds_bucket", le="+Inf", **labels) == 2
    assert value(families, "gateway_request_duration_seconds_sum", **labels) > 0
    # cumulative buckets: every finite bucket holds at most the next one's count
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in families["gateway_request_duration_seconds_bucket"]
        if all(s.labels.get(k) == v for k, v in labels.items())
    )
    assert len(buckets) == 16 and [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert value(families, "gateway_time_to_first_token_seconds_count", **labels) == 2
    assert value(families, "gateway_time_to_first_token_seconds_count", **flaky) == 1
    # tokens and cost (the fake's deterministic counts; price $1 / $2 per 1M)
    prompt = value(families, "gateway_tokens_total", model=model, type="prompt")
    completion = value(families, "gateway_tokens_total", model=model, type="completion")
    assert prompt > 0 and completion > 0
    assert value(families, "gateway_tokens_total", model=model, provider=second.name, type="prompt") > 0
    cost = value(families, "gateway_cost_total", model=model, currency="USD")
    assert cost == pytest.approx((prompt * 1 + completion * 2) / 1_000_000)
    # the failed attempts, by class, under the provider that failed them
    assert (
        value(families, "gateway_upstream_errors_total", provider=first.name, **{"class": "server_error"})
        == 1
    )
    assert (
        value(families, "gateway_upstream_errors_total", provider=first.name, **{"class": "rate_limited"})
        == 1
    )
    # an unknown model answered by the gateway itself: bounded labels, no provider
    assert value(families, "gateway_requests_total", **refused) >= 1
    # the relay's own gauges: breakers and in-flight calls per provider, the usage queue
    assert value(families, "gateway_breaker_state", provider=second.name) == 0
    assert value(families, "gateway_upstream_in_flight", provider=second.name) == 0
    assert "gateway_usage_queue_depth" in families
    assert "gateway_settlement_lag_seconds" in families
    # the Grafana dashboard in docs/ asks only for metrics the gateway exports
    dashboard = (ROOT / "docs" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"gateway_[a-z_]+", dashboard)) - {"gateway_settlement_last_run_age_seconds"}
    assert used and used <= {name.removesuffix("_bucket") for name in families} | set(families), used


def test_breaker_opens_in_the_gauge(gateway, world, fake, metrics_token):
    model = f"metrics-{uuid.uuid4().hex[:8]}"
    provider = world.provider(fake, name=f"broken-{model}")
    world.route(provider, model=model)
    key = world.key()
    fake.script(*[{"status": 500}] * settings.RELAY_BREAKER_FAILURES)
    for _ in range(settings.RELAY_BREAKER_FAILURES):
        assert chat(gateway.url, key, model).status_code == 502
    families = wait_for(gateway.url, "gateway_breaker_state", 2, provider=provider.name)
    assert value(families, "gateway_breaker_state", provider=provider.name) == 2


def test_metrics_need_the_token_or_an_allowed_network(gateway, settings):
    url = f"{gateway.url}/metrics"
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    off = httpx.get(url)
    assert off.status_code == 403 and "METRICS_TOKEN" in off.json()["detail"]

    settings.METRICS_TOKEN = TOKEN
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200

    import ipaddress

    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert httpx.get(url).status_code == 403  # the test connects from 127.0.0.1
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    allowed = httpx.get(url)
    assert allowed.status_code == 200 and "gateway_requests_total" in allowed.text


def test_a_bad_allowed_network_stops_start_up_with_one_line():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "METRICS_ALLOWED_NETWORKS": "10.0.0/33",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "configuration error: METRICS_ALLOWED_NETWORKS: '10.0.0/33'" in result.stderr


@pytest.mark.skipif(not settings.REDIS_URL, reason="two gunicorn workers need REDIS_URL (make test-full)")
def test_two_gunicorn_workers_are_counted_together(world, fake, tmp_path):
    """Requests spread over two workers on fresh connections; a scrape of either worker
    reports all of them (each worker writes its own files in PROMETHEUS_MULTIPROC_DIR)."""
    from tests.test_billing import _database_url, _free_port, _wait_http

    model = f"metrics-{uuid.uuid4().hex[:8]}"
    provider = world.provider(fake, name=f"gunicorn-{model}")
    world.route(provider, model=model)
    key = world.key()
    port = _free_port()
    directory = tmp_path / "prometheus"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DB_POOL_MAX": "0",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "gateway_project.asgi:application",
         "-w", "2", "-b", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health")
        sent = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while sent < 400:
                # fresh connections, so the kernel hands them to both workers
                statuses = list(pool.map(lambda _: chat(url, key, model).status_code, range(16)))
                assert statuses == [200] * 16
                sent += 16
                workers = {Path(p).stem.rsplit("_", 1)[1] for p in glob.glob(f"{directory}/counter_*.db")}
                if len(workers) >= 2:
                    break
                time.sleep(1.2)  # a flush, then look again
        assert len(workers) == 2, f"requests reached one worker only: {workers}"
        labels = {
            "model": model,
            "provider": provider.name,
            "endpoint": "/v1/chat/completions",
            "status": "200",
        }
        families = wait_for(url, "gateway_requests_total", sent, **labels)
        assert value(families, "gateway_requests_total", **labels) == sent
        assert value(families, "gateway_request_duration_seconds_count", **labels) == sent
        assert value(families, "gateway_time_to_first_token_seconds_count", **labels) == sent
        assert value(families, "gateway_tokens_total", model=model, type="prompt") > 0
        assert value(families, "gateway_upstream_in_flight", provider=provider.name) == 0
        assert "gateway_usage_queue_depth" in families  # from Redis at scrape time
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err[-2000:]
