"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver
packages, installed with apt-get when missing) driven by Selenium against the real ASGI
server. Nothing is downloaded but from the distribution's registry (no Selenium Manager)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from billing.models import UsageLog
from keys.models import APIKey
from keys.services import hash_key
from tests import system_packages
from tests.conftest import wait_usage
from tests.factories import UserFactory

CHROMIUM, CHROMEDRIVER = system_packages.CHROMIUM[1]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)
PASSWORD = "correct horse battery staple"
# screenshots of what the browser tests saw, kept after the run (CI may collect the folder)
ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parent.parent / "var" / "test-artifacts")
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser(monkeypatch):
    try:
        system_packages.ensure(*system_packages.CHROMIUM[1:])
    except system_packages.Unavailable as exc:
        pytest.fail(f"the browser test needs Debian's Chromium: {exc}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    profile = tempfile.mkdtemp(prefix="gateway-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, CSP reports in it
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    # every page records the Content-Security-Policy violations it meets (installed before
    # the page's own scripts run; the policy does not apply to what DevTools injects)
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__csp = []; document.addEventListener('securitypolicyviolation', e => "
            "window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        },
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def click_and_wait(browser, element, heading: str) -> None:
    """Clicks navigate asynchronously: wait until the old page is gone and the next one has
    ``heading`` (DOM reads during the switch may fail; they are retried)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old_page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(old_page))
    wait.until(expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), heading))


def chat(gateway, key: str, text: str) -> httpx.Response:
    """One chat completion through the relay with ``key``; it must succeed."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    return response


def test_log_in_create_a_key_and_call_the_relay_with_it(gateway, world, fake, browser):
    from selenium.webdriver.common.by import By

    world.route(world.provider(fake))
    alice = UserFactory(username="alice")

    browser.get(f"{gateway.url}/dashboard/login/")
    browser.find_element(By.ID, "id_username").send_keys("alice")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_and_wait(
        browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"), "Hello, alice"
    )

    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "API keys"), "API keys")
    browser.find_element(By.ID, "id_name").send_keys("from the browser")
    click_and_wait(browser, browser.find_element(By.ID, "create-key"), "API keys")
    plain = browser.find_element(By.ID, "new-key").text
    assert plain.startswith("sk-gw-")
    key = APIKey.objects.get(key_hash=hash_key(plain))
    assert key.user_id == alice.pk and key.name == "from the browser"

    # listed once, by its prefix; the plain key is on this page once and on no other
    prefixes = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#keys tbody .key-prefix")]
    assert prefixes == [f"{key.prefix}…"]
    assert browser.page_source.count(plain) == 1
    browser.get(f"{gateway.url}/dashboard/keys/")  # get() returns once the page has loaded
    assert plain not in browser.page_source
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#keys tbody .key-prefix")] == [
        f"{key.prefix}…"
    ]

    response = chat(gateway, plain, "hello from the dashboard")
    assert (
        response.json()["choices"][0]["message"]["content"] == "This is a fake answer from the fake upstream."
    )
    log = wait_usage(response.headers["x-request-id"])
    assert log.api_key_id == key.pk and log.user_id == alice.pk

    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "Usage"), "Usage")
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert any("gpt-4o-mini" in row.text for row in rows)
    assert "1 request costing" in browser.find_element(By.ID, "chart-desc").text
    assert UsageLog.objects.filter(user=alice).count() == 1


def save_screenshot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
    return path


def test_sign_up_create_a_key_call_the_relay_and_see_the_usage(gateway, world, fake, browser, settings):
    """A newcomer's first hour: the login page's sign-up link, a key, one request, and the
    request and its cost on the Usage page."""
    from selenium.webdriver.common.by import By

    from accounts import services as account_services
    from accounts.models import User
    from billing.models import BillingRecord
    from core.money import format_money, to_nanos

    settings.ALLOW_REGISTRATION = True
    world.route(world.provider(fake))
    browser.get(f"{gateway.url}/dashboard/login/")
    click_and_wait(browser, browser.find_element(By.ID, "sign-up-link"), "Create an account")
    browser.find_element(By.ID, "id_username").send_keys("newcomer")
    browser.find_element(By.ID, "id_password1").send_keys(PASSWORD)
    browser.find_element(By.ID, "id_password2").send_keys(PASSWORD)
    click_and_wait(browser, browser.find_element(By.ID, "sign-up"), "API keys")
    assert "Welcome, newcomer" in browser.find_element(By.CSS_SELECTOR, ".messages").text
    user = User.objects.get(username="newcomer")
    # a new account starts at $0: the operator tops it up (as in the console's Adjust balance)
    account_services.user_adjust_balance(
        user=user, amount=to_nanos("5"), kind=BillingRecord.Kind.TOPUP, description="welcome credit"
    )

    browser.find_element(By.ID, "id_name").send_keys("first key")
    click_and_wait(browser, browser.find_element(By.ID, "create-key"), "API keys")
    plain = browser.find_element(By.ID, "new-key").text
    assert APIKey.objects.get(key_hash=hash_key(plain)).user_id == user.pk

    response = chat(gateway, plain, "hello, I am new here")
    log = wait_usage(response.headers["x-request-id"])
    assert log.user_id == user.pk and log.cost > 0

    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "Usage"), "Usage")
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")]
    assert any("gpt-4o-mini" in row and format_money(log.cost) in row for row in rows), rows
    assert "1 request costing" in browser.find_element(By.ID, "chart-desc").text
    shot = save_screenshot(browser, "signup-key-request-usage")
    assert shot.stat().st_size > 10_000


def csp_violations(browser) -> list[str]:
    """The page's securitypolicyviolation events and the console's CSP messages so far."""
    seen = list(browser.execute_script("return window.__csp || []"))
    for entry in browser.get_log("browser"):
        if "Content Security Policy" in entry["message"] or "Content-Security-Policy" in entry["message"]:
            seen.append(entry["message"])
    return seen


def test_pages_meet_their_content_security_policy(gateway, browser):
    """The dashboard, the console and the API docs run under the policy (no inline script
    allowed) with nothing blocked, and the docs still render the API's operations."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    UserFactory(username="operator", is_staff=True, is_superuser=True)
    browser.get(f"{gateway.url}/dashboard/login/")
    browser.find_element(By.ID, "id_username").send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_and_wait(
        browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"), "Hello, operator"
    )
    assert csp_violations(browser) == []
    for page in (
        "/dashboard/keys/",
        "/dashboard/usage/",
        "/dashboard/billing/",
        "/admin/",
        "/admin/billing/usagelog/dashboard/",
    ):
        browser.get(f"{gateway.url}{page}")
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert csp_violations(browser) == [], page

    browser.get(f"{gateway.url}/api/docs/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#swagger-ui .opblock")) > 10)
    assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path[data-path='/v1/chat/completions']")
    assert csp_violations(browser) == []

    browser.get(f"{gateway.url}/api/redoc/")
    wait.until(lambda b: "/v1/chat/completions" in b.find_element(By.TAG_NAME, "body").text)
    # ReDoc's bundle always asks for its vendor's logo on cdn.redoc.ly (its "API docs by
    # Redocly" link): blocked on purpose, the docs use nothing remote, and the image hides
    # itself when it fails. Anything else blocked is a defect.
    remote_logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert [v for v in csp_violations(browser) if remote_logo not in v] == []
