"""Midjourney tasks in the console: the user's dashboard lists their own tasks with their
images, the operator's admin filters them, shows thumbnails and refreshes them from the
upstream (a real loopback midjourney-proxy fake)."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client

from jobs import services
from jobs.models import MidjourneyTask
from providers.services import provider_create
from tests import factories
from tests.fakes.midjourney import FakeMidjourney, png
from tests.test_dashboard_browser import browser  # noqa: F401  (the fixture)

SECRET = "mj-console-secret"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def fake():
    with FakeMidjourney(secret=SECRET) as server:
        yield server


@pytest.fixture
def provider(fake):
    return provider_create(name="mj", type="midjourney", base_url=fake.url, api_key=SECRET)


def _upstream_task(fake, prompt="a cat") -> str:
    answer = httpx.post(
        f"{fake.url}/mj/submit/imagine", json={"prompt": prompt}, headers={"mj-api-secret": SECRET}
    )
    return answer.json()["result"]


def make_task(user, provider, upstream_id: str, task_id: str, *, price: int = 0, **fields) -> MidjourneyTask:
    """A task as the relay creates it at submit (``price`` charged), then ``fields`` set."""
    task = services.midjourney_task_create(
        task_id=task_id,
        upstream_task_id=upstream_id,
        user_id=user.pk,
        api_key_id=None,
        provider_id=provider.pk,
        parent_id=None,
        action="IMAGINE",
        model="mj_imagine",
        mode="",
        prompt=f"prompt of {task_id}",
        state="",
        price=price,
        submit_request_id=f"req-{task_id}",
    )
    if fields:
        MidjourneyTask.objects.filter(pk=task.pk).update(**fields)
        task.refresh_from_db()
    return task


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_lists_own_tasks_with_images(fake, provider, settings):
    settings.MJ_IMAGE_PROXY = False
    alice = factories.UserFactory(username="alice")
    bob = factories.UserFactory(username="bob")
    image = f"{fake.url}/images/up1.png"
    make_task(alice, provider, "up1", "t-alice-done", status="SUCCESS", progress=100, image_url=image)
    make_task(alice, provider, "up2", "t-alice-failed", status="FAILURE", fail_reason="Banned by moderation")
    make_task(bob, provider, "up3", "t-bob", status="SUCCESS", image_url=image)
    page = _browser(alice).get("/dashboard/images/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "t-alice-done" in html and "t-alice-failed" in html and "Banned by moderation" in html
    assert "t-bob" not in html
    # the proxy is off: a link to the upstream's image (the page's policy shows same-origin
    # images only), no inline image
    assert f'href="{image}"' in html and "<img" not in html
    only_failed = _browser(alice).get("/dashboard/images/", {"status": "FAILURE"}).content.decode()
    assert "t-alice-failed" in only_failed and "t-alice-done" not in only_failed
    assert _browser(alice).get("/dashboard/images/t-alice-done/image").status_code == 404  # proxy off

    settings.MJ_IMAGE_PROXY = True
    html = _browser(alice).get("/dashboard/images/").content.decode()
    assert 'src="/dashboard/images/t-alice-done/image"' in html and image not in html
    assert "img-src 'self' data:" in _browser(alice).get("/dashboard/images/")["Content-Security-Policy"]
    response = _browser(alice).get("/dashboard/images/t-alice-done/image")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content == png()
    assert _browser(alice).get("/dashboard/images/t-bob/image").status_code == 404  # not hers
    assert _browser(alice).get("/dashboard/images/t-alice-failed/image").status_code == 404  # no image
    # an image URL on another loopback host is refused (only the provider's host is trusted)
    MidjourneyTask.objects.filter(task_id="t-alice-done").update(image_url="http://127.0.0.1:9/x.png")
    assert _browser(alice).get("/dashboard/images/t-alice-done/image").status_code == 502


def test_admin_filters_thumbnails_and_refresh_from_upstream(fake, provider, settings):
    staff = factories.UserFactory(username="ops", is_staff=True, is_superuser=True)
    alice = factories.UserFactory(username="alice")
    upstream = _upstream_task(fake)
    running = make_task(alice, provider, upstream, "t-running")
    make_task(alice, provider, "gone", "t-done", status="SUCCESS", image_url=f"{fake.url}/images/gone.png")
    admin = _browser(staff)
    url = "/admin/jobs/midjourneytask/"
    settings.MJ_IMAGE_PROXY = False
    listing = admin.get(url)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "t-running" in html and "t-done" in html and f'href="{fake.url}/images/gone.png"' in html
    for query in (
        {"status__exact": "SUCCESS"},
        {"action__exact": "IMAGINE", "status__exact": "SUCCESS"},
        {"provider__id__exact": provider.pk, "status__exact": "SUCCESS"},
        {"user__id__exact": alice.pk, "status__exact": "SUCCESS"},
    ):
        filtered = admin.get(url, query).content.decode()
        assert "t-done" in filtered and "t-running" not in filtered, query
    settings.MJ_IMAGE_PROXY = True
    assert 'src="/dashboard/images/t-done/image"' in admin.get(url).content.decode()
    assert admin.get("/dashboard/images/t-done/image").status_code == 200  # staff see any task's image

    for expected in ("IN_PROGRESS", "SUCCESS"):
        done = admin.post(
            url, {"action": "refresh_from_upstream", "_selected_action": [running.pk]}, follow=True
        )
        assert done.status_code == 200 and "1 of 1 unfinished task(s) read" in done.content.decode()
        running.refresh_from_db()
        assert running.status == expected
    assert running.image_url and running.buttons
    assert admin.get(f"{url}{running.pk}/change/").status_code == 200


@pytest.mark.e2e
def test_images_show_in_a_real_browser_under_the_pages_policy(gateway, fake, provider, browser):  # noqa: F811
    """Headless Chromium against the real server: the dashboard's and the console's task
    images load (same origin, through the gateway's image view) with no
    Content-Security-Policy violation."""
    from selenium.webdriver.common.by import By

    from tests.test_dashboard_browser import PASSWORD, click_and_wait, csp_violations

    alice = factories.UserFactory(username="alice", password=PASSWORD)
    factories.UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    make_task(alice, provider, "up1", "t-shown", status="SUCCESS", image_url=f"{fake.url}/images/up1.png")

    def log_in(username: str) -> None:
        browser.delete_all_cookies()
        browser.get(f"{gateway.url}/dashboard/login/")
        browser.find_element(By.ID, "id_username").send_keys(username)
        browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
        click_and_wait(
            browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"), "Hello"
        )

    def loaded_images() -> list[int]:
        browser.execute_async_script(
            "const done = arguments[0]; Promise.all([...document.images].map(i => i.decode().catch(() => 0)))"
            ".then(() => done())"
        )
        thumbnails = "img[src^='/dashboard/images/']"
        return browser.execute_script(
            f'return [...document.querySelectorAll("{thumbnails}")].map(i => i.naturalWidth)'
        )

    log_in("alice")
    browser.get(f"{gateway.url}/dashboard/images/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Images"
    assert loaded_images() == [4]  # the fake's 4x4 PNG, through the gateway
    assert csp_violations(browser) == []
    log_in("operator")
    browser.get(f"{gateway.url}/admin/jobs/midjourneytask/")
    assert loaded_images() == [4]
    assert csp_violations(browser) == []
