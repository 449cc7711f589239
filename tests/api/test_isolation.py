"""Isolation: a user never reads or changes another user's keys, logs, ledger or profile, and
staff endpoints refuse everyone else. The endpoint lists come from the URL configuration, so
a new endpoint is covered without touching this file."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from gateway_project import console_urls as urls
from keys.models import APIKey

from .conftest import PASSWORD
from .helpers import world_of

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "patch", "put", "delete")


def _endpoints(patterns, prefix):
    for pattern in patterns:
        view = pattern.callback.view_class
        route = str(pattern.pattern)
        methods = [m for m in METHODS if hasattr(view, m)]
        yield prefix + route, methods


ME = list(_endpoints(urls.me_patterns, "/api/me/"))
ADMIN = list(_endpoints(urls.admin_patterns, "/api/admin/"))


def fill(route: str, object_id: int) -> str:
    return re.sub(r"<id:\w+>", str(object_id), route)


@pytest.fixture
def two_worlds(alice, bob):
    return world_of(alice), world_of(bob)


@pytest.mark.parametrize(("route", "methods"), [e for e in ME if "<id:" in e[0]], ids=lambda v: str(v))
def test_another_users_key_id_is_a_404_for_every_method(api, two_worlds, route, methods):
    _, theirs = two_worlds
    url = fill(route, theirs["key"].pk)
    before = APIKey.objects.values().get(pk=theirs["key"].pk)
    for method in methods:
        response = getattr(api, method)(url, {"name": "mine now", "grace_seconds": 0})
        assert response.status_code == 404, (method, url, response.content)
        assert theirs["key"].prefix not in response.content.decode()
    assert APIKey.objects.values().get(pk=theirs["key"].pk) == before
    assert APIKey.objects.filter(user=theirs["key"].user).count() == 1  # no successor either


@pytest.mark.parametrize(
    "route", [route for route, methods in ME if "<id:" not in route and "get" in methods], ids=str
)
def test_lists_show_only_your_own_rows(api, two_worlds, route):
    _, theirs = two_worlds
    response = api.get(route)
    assert response.status_code == 200
    text = response.content.decode()
    assert theirs["key"].prefix not in text and theirs["log"].request_id not in text
    assert "bob" not in text


def test_lists_contain_your_rows(api, two_worlds):
    mine, _ = two_worlds
    assert [k["id"] for k in api.get("/api/me/keys/").json()["results"]] == [mine["key"].pk]
    assert [r["request_id"] for r in api.get("/api/me/usage/").json()["results"]] == [mine["log"].request_id]
    assert [r["id"] for r in api.get("/api/me/ledger/").json()["results"]] == [mine["ledger"].pk]
    assert {q["id"] for q in api.get("/api/me/quotas/").json()} == {
        mine["user_quota"].pk,
        mine["key_quota"].pk,
    }


@pytest.mark.parametrize("path", ["/api/me/usage/", "/api/me/ledger/"])
def test_filtering_by_another_users_key_is_a_404(api, two_worlds, path):
    _, theirs = two_worlds
    response = api.get(path, {"api_key": theirs["key"].pk})
    assert response.status_code == 404 and theirs["log"].request_id not in response.content.decode()


def test_profile_is_always_your_own(api, bob):
    assert api.get("/auth/profile").json()["username"] == "alice"
    api.patch("/auth/profile", {"full_name": "x", "id": bob.pk, "username": "bob"})
    bob.refresh_from_db()
    assert bob.full_name == ""


@pytest.mark.parametrize(("route", "methods"), ADMIN, ids=lambda v: str(v))
def test_staff_endpoints_refuse_non_staff_tokens(api, anon, two_worlds, route, methods):
    _, theirs = two_worlds
    url = fill(route, theirs["key"].pk)
    for method in methods:
        assert getattr(api, method)(url, {}).status_code == 403, (method, url)
        assert getattr(anon, method)(url, {}).status_code == 401, (method, url)
    assert APIKey.objects.get(pk=theirs["key"].pk).status == "active"


@pytest.mark.parametrize(("route", "methods"), ADMIN, ids=lambda v: str(v))
def test_staff_endpoints_answer_staff(staff_api, two_worlds, route, methods):
    _, theirs = two_worlds
    if "get" in methods:
        assert staff_api.get(fill(route, theirs["key"].pk)).status_code in (200, 404)


# --- dashboard pages -------------------------------------------------------------------------


@pytest.fixture
def browser(alice):
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    return client


@pytest.mark.parametrize("action", ["revoke", "regenerate"])
def test_dashboard_actions_on_another_users_key_are_404(browser, two_worlds, action):
    _, theirs = two_worlds
    response = browser.post(f"/dashboard/keys/{theirs['key'].pk}/{action}/", {"grace": "0"})
    assert response.status_code == 404
    key = APIKey.objects.get(pk=theirs["key"].pk)
    assert key.status == "active" and key.replaced_by_id is None


@pytest.mark.parametrize("page", ["", "keys/", "usage/", "billing/", "models/"])
def test_dashboard_pages_show_only_your_own_rows(browser, two_worlds, page):
    mine, theirs = two_worlds
    response = browser.get(f"/dashboard/{page}")
    assert response.status_code == 200
    text = response.content.decode()
    assert theirs["key"].prefix not in text and theirs["log"].request_id not in text and "bob" not in text
    if page == "keys/":
        assert mine["key"].prefix in text


def test_dashboard_usage_filter_cannot_reach_other_users(browser, two_worlds):
    _, theirs = two_worlds
    text = browser.get("/dashboard/usage/", {"model": "gpt-4o-mini"}).content.decode()
    assert f"#{theirs['key'].pk}<" not in text
