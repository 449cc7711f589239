"""The operator console in a real browser (headless Chromium through Selenium, as in
tests/test_dashboard_browser.py): the providers page with an auto-disabled provider, whose
Test button re-enables it once the fake upstream recovers. Screenshots are kept in
``TEST_ARTIFACTS_DIR`` (default ``var/test-artifacts``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from billing.models import UsageLog
from providers.models import Provider
from providers.services import provider_create, provider_set_status
from tests.factories import UserFactory
from tests.test_dashboard_browser import PASSWORD, browser, click_and_wait  # noqa: F401 (fixture)
from tests.test_provider_console import log

ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS_DIR") or Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
)

pytestmark = pytest.mark.e2e


def screenshot(browser, name: str) -> Path:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 1000
    return path


def log_in_to_console(browser, url: str) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    UserFactory(username="operator", is_staff=True, is_superuser=True)
    browser.get(f"{url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"), "Operations")


def test_provider_page_shows_an_auto_disabled_provider_and_its_test_button_re_enables_it(
    gateway,
    fake,
    browser,  # noqa: F811
):
    from selenium.webdriver.common.by import By

    provider = provider_create(
        name="flaky-upstream", type="openai", base_url=f"{fake.url}/v1", api_key="sk-up"
    )
    provider_set_status(
        provider=provider, status=Provider.Status.AUTO_DISABLED, reason="HTTP 401: Incorrect API key provided"
    )
    for hours_ago in range(0, 24, 2):  # what it served before it was disabled, for the sparkline
        for _ in range(hours_ago % 5 + 1):
            log(provider, minutes_ago=hours_ago * 60 + 1, latency=100 + hours_ago * 20)
        log(
            None, minutes_ago=hours_ago * 60 + 1, status=502, tried=[{"provider": provider.pk, "status": 500}]
        )
    log_in_to_console(browser, gateway.url)
    alert = browser.find_element(By.ID, "auto-disabled-providers")  # on the console's index page
    assert "flaky-upstream" in alert.text and "Incorrect API key" in alert.text

    browser.get(f"{gateway.url}/admin/providers/provider/")
    row = browser.find_element(By.XPATH, "//tr[.//a[text()='flaky-upstream']]")
    badge = row.find_element(By.CSS_SELECTOR, ".provider-auto-disabled")
    assert (
        badge.text == "Auto-disabled"
        and badge.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    )
    assert "not probed yet" in row.text
    sparkline = row.find_element(By.CSS_SELECTOR, "svg.sparkline")
    assert "last 24 h: 34 requests, 12 errors" in sparkline.get_attribute("aria-label")
    assert len(sparkline.find_elements(By.CSS_SELECTOR, "rect")) == 24  # 12 hours of requests, 12 of errors
    screenshot(browser, "console-providers-auto-disabled")

    # still down: the test fails, says why and how long it took, and the provider stays off
    fake.script({"status": 503})
    click_and_wait(
        browser, row.find_element(By.CSS_SELECTOR, "button.provider-test"), "Select provider to change"
    )
    message = browser.find_element(By.CSS_SELECTOR, ".messagelist .error").text
    assert re.search(r"test failed after \d+ ms \(HTTP 503", message), message
    row = browser.find_element(By.XPATH, "//tr[.//a[text()='flaky-upstream']]")
    assert row.find_elements(By.CSS_SELECTOR, ".provider-auto-disabled")
    assert (
        "Failed" in row.text
        and "scripted error 503" in row.find_element(By.CSS_SELECTOR, ".provider-last-error").text
    )

    # the upstream recovered: the test passes, shows the measured latency, and re-enables it
    click_and_wait(
        browser, row.find_element(By.CSS_SELECTOR, "button.provider-test"), "Select provider to change"
    )
    message = browser.find_element(By.CSS_SELECTOR, ".messagelist .success").text
    latency = re.search(r"test passed in (\d+) ms\. Re-enabled", message)
    assert latency, message
    row = browser.find_element(By.XPATH, "//tr[.//a[text()='flaky-upstream']]")
    assert not row.find_elements(By.CSS_SELECTOR, ".provider-auto-disabled")
    assert f"OK · {latency.group(1)} ms" in row.text
    screenshot(browser, "console-providers-re-enabled")
    provider.refresh_from_db()
    assert provider.status == Provider.Status.ENABLED and provider.response_time_ms == int(latency.group(1))

    browser.get(f"{gateway.url}/admin/")
    assert not browser.find_elements(By.ID, "auto-disabled-providers")


def test_usage_chart_page_has_axes_and_dates(gateway, browser):  # noqa: F811
    from datetime import timedelta

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.test_dashboard_charts import log as usage_log

    alice = UserFactory(username="alice")
    for days_ago in range(0, 30, 3):
        for _ in range(days_ago % 4 + 1):
            usage_log(alice, ago=timedelta(days=days_ago, minutes=1))
    usage_log(alice, ago=timedelta(minutes=1), status=502)

    browser.get(f"{gateway.url}/dashboard/login/")
    browser.find_element(By.ID, "id_username").send_keys("alice")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_and_wait(
        browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"), "Hello, alice"
    )
    browser.get(f"{gateway.url}/dashboard/usage/")
    chart = browser.find_element(By.ID, "usage-chart")
    assert chart.is_displayed() and chart.size["width"] > 400
    ticks = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.tick")]
    assert ticks == ["0", "1", "2", "3", "4"]
    dates = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.date")]
    assert len(dates) >= 6 and all(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", d) for d in dates), dates
    titles = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.axis-title")]
    assert titles == ["Requests (count)", "Day (UTC)"]
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 30
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar-errors")) == 1
    screenshot(browser, "dashboard-usage-chart-per-day")

    Select(browser.find_element(By.ID, "id_period")).select_by_value("hour")
    Select(browser.find_element(By.ID, "id_metric")).select_by_value("cost")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.usage-filters button"), "Usage")
    assert browser.find_element(By.ID, "chart-title").text == "Cost per hour, last 48 hours"
    chart = browser.find_element(By.ID, "usage-chart")
    hours = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.date") if ":" in t.text]
    assert hours and all(re.fullmatch(r"\d\d:00", h) for h in hours)
    assert chart.find_elements(By.CSS_SELECTOR, "text.tick")[-1].text.startswith("$")
    screenshot(browser, "dashboard-usage-chart-per-hour")


def test_usage_log_list_fits_1400_pixels_with_attempts_as_a_list(gateway, browser):  # noqa: F811
    from datetime import timedelta

    from selenium.webdriver.common.by import By

    from tests.test_dashboard_charts import log as usage_log

    provider = provider_create(name="backup-upstream", type="openai", base_url="http://127.0.0.1:9/v1")
    alice = UserFactory(username="alice")
    usage_log(alice, ago=timedelta(minutes=1), provider=provider, model="a-rather-long-model-name-2026-11-30")
    row = UsageLog.objects.latest("created_at")
    row.providers_tried = [
        {"provider": 1, "name": "primary-upstream", "status": 500, "error": "upstream overloaded", "ms": 12},
        {"provider": provider.pk, "name": "backup-upstream", "status": 200, "error": "", "ms": 240},
    ]
    row.latency_ms, row.ttft_ms = 260, 90
    row.save()
    browser.set_window_size(1400, 900)
    log_in_to_console(browser, gateway.url)
    browser.get(f"{gateway.url}/admin/billing/usagelog/")
    screenshot(browser, "console-usage-logs-1400px")
    scroller = browser.find_element(By.CSS_SELECTOR, ".results")
    width = scroller.rect["x"] + scroller.rect["width"]  # the list's visible right edge
    assert width <= browser.execute_script("return document.documentElement.clientWidth")
    for column in ("model_column", "cost_display", "latency", "attempts"):
        header = browser.find_element(By.CSS_SELECTOR, f"th.column-{column}")
        assert header.rect["x"] + header.rect["width"] <= width + 1, (column, header.rect, width)
    overflow = browser.execute_script("return arguments[0].scrollWidth - arguments[0].clientWidth", scroller)
    assert overflow <= 0, f"the list scrolls sideways by {overflow} px"
    attempts = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "td.field-attempts li")]
    assert attempts == ["primary-upstream: 500 · 12 ms error", "backup-upstream: 200 · 240 ms"]
    assert "first byte 90 ms" in browser.find_element(By.CSS_SELECTOR, "td.field-latency").text
    screenshot(browser, "console-usage-logs-1400px")
