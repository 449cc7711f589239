"""The console's providers page: health column, test button and action, 24-hour activity,
fetching the upstream's models to route them, and the index page's auto-disabled alert.
Probes and model lists go to the loopback fake upstream."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageLog
from providers.health import ModelListError, provider_upstream_models
from providers.models import Model, Provider, ProviderModel
from providers.selectors import provider_hourly_activity
from providers.services import provider_create, provider_set_status

BASE = {"openai": "/v1", "anthropic": "/v1", "gemini": "/v1beta", "azure": ""}
CHANGELIST = "admin:providers_provider_changelist"


def make_provider(fake, *, type="openai", name=None, **fields) -> Provider:
    return provider_create(
        name=name or f"{type}-upstream", type=type, base_url=fake.url + BASE[type], api_key="sk-up", **fields
    )


def auto_disabled(fake, name="flaky") -> Provider:
    provider = make_provider(fake, name=name)
    return provider_set_status(
        provider=provider, status=Provider.Status.AUTO_DISABLED, reason="HTTP 401: bad key"
    )


NUMBERS = itertools.count(1)


def log(provider, *, minutes_ago: int, status: int = 200, latency: int = 100, tried=None) -> None:
    number = next(NUMBERS)
    UsageLog.objects.create(
        request_id=f"console-{number}",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        provider_id=provider.pk if provider is not None else None,
        endpoint="/v1/chat/completions",
        model_requested="gpt-4o-mini",
        status_code=status,
        latency_ms=latency,
        providers_tried=tried or [],
    )


@pytest.mark.parametrize(
    ("type", "expected"),
    [
        ("openai", {"gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-latest", "gemini-1.5-flash"}),
        ("anthropic", {"claude-3-5-sonnet-latest", "gpt-4o-mini"}),
        ("gemini", {"gemini-1.5-flash"}),
    ],
)
def test_each_provider_type_lists_its_upstream_models(db, fake, type, expected):
    listed = provider_upstream_models(make_provider(fake, type=type))
    ids = [model.id for model in listed]
    assert expected <= set(ids) and ids == sorted(ids)
    request = fake.requests[-1]
    assert request["method"] == "GET"
    if type == "gemini":
        assert (
            request["path"] == "/v1beta/models" and listed[0].name == "gemini-1.5-flash"
        )  # "models/" dropped
    else:
        assert request["path"] == "/v1/models"


def test_azure_and_unreachable_upstreams_say_why(db, fake):
    with pytest.raises(ModelListError, match="do not list their models"):
        provider_upstream_models(make_provider(fake, type="azure"))
    fake.script({"status": 500})
    with pytest.raises(ModelListError, match="HTTP 500"):
        provider_upstream_models(make_provider(fake, name="failing"))


def test_hourly_activity_counts_answers_latency_and_failed_attempts(db, fake):
    steady, flaky = make_provider(fake, name="steady"), make_provider(fake, name="flaky")
    failover = [{"provider": flaky.pk, "status": 500}, {"provider": steady.pk, "status": 200}]
    log(steady, minutes_ago=0, latency=100, tried=failover)
    log(steady, minutes_ago=0, latency=300)
    log(None, minutes_ago=0, status=502, tried=[{"provider": flaky.pk, "status": 401}])  # nobody answered
    log(steady, minutes_ago=0, status=502)  # answered, then the stream broke
    log(steady, minutes_ago=60 * 30, latency=999)  # older than 24 hours
    activity = provider_hourly_activity(provider_ids=[steady.pk, flaky.pk])
    now, earlier = activity[steady.pk][-1], activity[steady.pk][:-1]
    assert (now.requests, now.errors, now.latency_ms) == (3, 1, pytest.approx((100 + 300 + 100) / 3))
    assert all(hour.requests == 0 for hour in earlier) and len(activity[steady.pk]) == 24
    assert activity[flaky.pk][-1].errors == 2 and activity[flaky.pk][-1].requests == 0


def test_provider_list_shows_health_activity_and_a_highlighted_auto_disabled_provider(admin_client, fake):
    healthy = make_provider(fake, name="healthy")
    Provider.objects.filter(pk=healthy.pk).update(
        health_status="healthy", response_time_ms=42, last_health_check_at=timezone.now()
    )
    broken = auto_disabled(fake)
    Provider.objects.filter(pk=broken.pk).update(
        health_status="unhealthy", last_error="HTTP 401: invalid <key>", last_health_check_at=timezone.now()
    )
    log(healthy, minutes_ago=5, latency=250)
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "OK · 42 ms" in page
    assert "Auto-disabled" in page and 'title="HTTP 401: bad key"' in page
    assert "HTTP 401: invalid &lt;key&gt;" in page  # the last error, escaped
    assert "last 24 h: 1 requests, 0 errors, mean latency 250 ms" in page
    assert page.count('class="sparkline"') == 2
    assert len(re.findall(r'formaction="/admin/providers/provider/\d+/test/"', page)) == 2
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="auto-disabled-providers"' in index and "flaky</a>: HTTP 401: bad key" in index


def test_test_button_reports_latency_and_re_enables_only_when_the_probe_passes(admin_client, fake):
    provider = auto_disabled(fake)
    url = reverse("admin:providers_provider_test", args=[provider.pk])
    assert admin_client.get(url).status_code == 405  # a probe changes state: POST only
    fake.script({"status": 503})
    page = admin_client.post(url, follow=True).content.decode()
    assert re.search(r"flaky: test failed after \d+ ms \(HTTP 503: .*\)\. It stays disabled\.", page, re.I)
    provider.refresh_from_db()
    assert provider.status == Provider.Status.AUTO_DISABLED and provider.health_status == "unhealthy"

    page = admin_client.post(url, follow=True).content.decode()
    assert re.search(r"flaky: test passed in \d+ ms\. Re-enabled", page, re.I)
    provider.refresh_from_db()
    assert provider.status == Provider.Status.ENABLED and provider.health_status == "healthy"
    assert provider.response_time_ms is not None
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "auto-disabled-providers" not in index


def test_bulk_test_action_probes_each_selected_provider(admin_client, fake):
    first, second = auto_disabled(fake, "first"), make_provider(fake, name="second")
    operator_disabled = make_provider(fake, name="held")
    provider_set_status(provider=operator_disabled, status=Provider.Status.DISABLED, reason="by hand")
    fake.script({"status": 500})  # the first probe fails
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "probe_providers", "_selected_action": [first.pk, second.pk, operator_disabled.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert page.count("test passed in") == 2 and page.count("test failed after") == 1
    statuses = dict(Provider.objects.values_list("name", "status"))
    # an operator's "disabled" is never lifted by a probe
    assert statuses == {"first": "auto_disabled", "second": "enabled", "held": "disabled"}


def test_fetch_models_lists_the_upstream_and_routes_the_chosen_ones(admin_client, fake):
    provider = make_provider(fake)
    existing = Model.objects.create(slug="gpt-4o")
    ProviderModel.objects.create(provider=provider, model=existing)
    url = reverse("admin:providers_provider_models", args=[provider.pk])
    page = admin_client.get(url).content.decode()
    assert 'value="gpt-4o-mini"' in page and 'value="gpt-4o"' not in page  # already routed
    assert "<code>gpt-4o</code></label> <small>(routed)</small>" in page
    response = admin_client.post(
        url, {"model": ["gpt-4o-mini", "text-embedding-3-small", "gpt-4o"]}, follow=True
    )
    assert "Routed through openai-upstream: gpt-4o-mini, text-embedding-3-small." in response.content.decode()
    routed = set(ProviderModel.objects.filter(provider=provider).values_list("model__slug", flat=True))
    assert routed == {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"}
    change = admin_client.get(reverse("admin:providers_provider_change", args=[provider.pk])).content.decode()
    assert "Fetch models from upstream" in change and "Test now" in change


def test_fetch_models_page_says_why_when_the_upstream_refuses(admin_client, fake):
    provider = make_provider(fake)
    fake.script({"status": 401})
    page = admin_client.get(reverse("admin:providers_provider_models", args=[provider.pk])).content.decode()
    assert 'class="errornote"' in page and "HTTP 401" in page
