"""The dashboard's pages with Django's test client (no JavaScript anywhere)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.services import user_suspend
from billing.services import redemption_codes_generate
from core.money import to_nanos
from keys.models import APIKey
from keys.services import api_key_create, hash_key

from .conftest import PASSWORD
from .helpers import daily, ledger, usage_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(alice):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/dashboard/login/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        "/dashboard/login/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    client.csrf = client.cookies["csrftoken"].value
    return client


def post(client, url, data=None):
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": client.csrf})


def test_pages_need_a_login():
    client = Client()
    for page in ("", "keys/", "usage/", "billing/", "models/"):
        response = client.get(f"/dashboard/{page}")
        assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/")


def test_login_errors_and_throttling(alice):
    client = Client()
    wrong = client.post("/dashboard/login/", {"username": "alice", "password": "nope"})
    unknown = client.post("/dashboard/login/", {"username": "nobody", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 200
    assert b"Please enter a correct username and password" in wrong.content
    assert b"Please enter a correct username and password" in unknown.content
    for _ in range(9):  # alice: 10 failures from this address
        client.post("/dashboard/login/", {"username": "alice", "password": "nope"})
    blocked = client.post("/dashboard/login/", {"username": "alice", "password": PASSWORD})
    assert blocked.status_code == 429 and b"Too many failed logins" in blocked.content


def test_suspended_users_are_logged_out(browser, alice):
    user_suspend(user=alice)
    response = browser.get("/dashboard/keys/")
    assert response.status_code == 302 and response["Location"] == "/dashboard/login/"
    assert Client().post("/dashboard/login/", {"username": "alice", "password": PASSWORD}).status_code == 200


def test_create_a_key_and_see_it_once(browser, alice):
    response = post(browser, "/dashboard/keys/", {"name": "laptop", "expires_in": "30", "budget": "2.50"})
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    plain = re.search(r'<code id="new-key">(sk-gw-[^<]+)</code>', html).group(1)
    key = APIKey.objects.get(key_hash=hash_key(plain))
    assert key.user == alice and key.name == "laptop" and key.budget == to_nanos("2.5") and key.expires_at
    assert html.count(plain) == 1
    listing = browser.get("/dashboard/keys/").content.decode()
    assert plain not in listing and listing.count(f'<code class="key-prefix">{key.prefix}…</code>') == 1


def test_create_key_form_errors(browser):
    response = post(browser, "/dashboard/keys/", {"budget": "-1", "expires_in": "12"})
    assert response.status_code == 400 and b"errorlist" in response.content
    assert not APIKey.objects.exists()


def test_revoke_and_regenerate(browser, alice):
    key = api_key_create(user=alice, name="old").key
    response = post(browser, f"/dashboard/keys/{key.pk}/regenerate/", {"grace": "86400"})
    assert response.status_code == 201
    plain = re.search(r'<code id="new-key">(sk-gw-[^<]+)</code>', response.content.decode()).group(1)
    new = APIKey.objects.get(key_hash=hash_key(plain))
    key.refresh_from_db()
    assert key.replaced_by_id == new.pk and key.valid_until is not None
    assert b"works until" in response.content
    response = post(browser, f"/dashboard/keys/{new.pk}/revoke/")
    assert response.status_code == 302
    new.refresh_from_db()
    assert new.status == "revoked"
    assert b"is revoked" in browser.get("/dashboard/keys/").content
    # CSRF is enforced and GET does nothing
    assert browser.get(f"/dashboard/keys/{key.pk}/revoke/").status_code == 405
    assert browser.post(f"/dashboard/keys/{key.pk}/revoke/").status_code == 403


def test_usage_page_draws_the_chart_on_the_server(browser, alice):
    daily(alice, days_ago=1, requests=4)
    daily(alice, days_ago=0, requests=2)
    usage_log(alice, model="gpt-4o-mini")
    usage_log(alice, model="other", status=500)
    html = browser.get("/dashboard/usage/").content.decode()
    assert '<svg class="chart" role="img"' in html and html.count('<rect class="bar"') == 30
    assert "6 requests" in html and "<script" not in html
    filtered = browser.get("/dashboard/usage/", {"status": "error"}).content.decode()
    assert ">other<" in filtered and ">gpt-4o-mini<" not in filtered


def test_billing_page_and_redeem(browser, alice):
    ledger(alice, "1.5")
    [code] = redemption_codes_generate(count=1, amount=to_nanos("3"))
    response = post(browser, "/dashboard/billing/", {"code": code})
    assert response.status_code == 302
    page = browser.get("/dashboard/billing/").content.decode()
    assert "Redeemed $3.00" in page and "$13.00" in page
    again = post(browser, "/dashboard/billing/", {"code": code})
    assert again.status_code == 400 and b"already been used" in again.content


def test_overview_and_models_pages_link_the_docs(browser):
    for page in ("/dashboard/", "/dashboard/models/"):
        html = browser.get(page).content.decode()
        assert 'href="/api/docs/"' in html and 'lang="en"' in html and 'href="#main"' in html


def test_logout(browser):
    response = post(browser, "/dashboard/logout/")
    assert response.status_code == 302
    assert browser.get("/dashboard/").status_code == 302


# --- sign-up -------------------------------------------------------------------------------------


def _signup(client, **fields):
    page = client.get("/dashboard/signup/")
    assert page.status_code == 200
    data = {"username": "newcomer", "email": "", "password1": "a fine long passphrase"}
    data = {**data, "password2": data["password1"], **fields}
    return client.post("/dashboard/signup/", {**data, "csrfmiddlewaretoken": page.cookies["csrftoken"].value})


def test_sign_up_logs_in_and_leads_to_the_keys(settings):
    settings.ALLOW_REGISTRATION = True
    client = Client(enforce_csrf_checks=True)
    assert 'href="/dashboard/signup/"' in client.get("/dashboard/login/").content.decode()
    response = _signup(client)
    assert response.status_code == 302 and response["Location"] == "/dashboard/keys/"
    page = client.get("/dashboard/keys/").content.decode()
    assert "Welcome, newcomer" in page
    from accounts.models import User

    user = User.objects.get(username="newcomer")
    assert user.check_password("a fine long passphrase") and not user.is_staff and user.balance == 0


def test_sign_up_on_the_dashboard_gets_the_sign_up_credit(settings):
    settings.ALLOW_REGISTRATION = True
    settings.SIGNUP_CREDIT = 1_000_000_000
    assert _signup(Client(enforce_csrf_checks=True)).status_code == 302
    from accounts.models import User

    user = User.objects.get(username="newcomer")
    assert user.balance == 1_000_000_000
    assert list(user.ledger.values_list("kind", "amount")) == [("topup", 1_000_000_000)]


def test_sign_up_checks_like_the_api(settings, alice):
    settings.ALLOW_REGISTRATION = True
    taken = _signup(Client(enforce_csrf_checks=True), username="alice")
    assert taken.status_code == 400 and "already exists" in taken.content.decode()
    weak = _signup(Client(enforce_csrf_checks=True), password1="12345678", password2="12345678")
    assert weak.status_code == 400 and "too common" in weak.content.decode()
    differ = _signup(Client(enforce_csrf_checks=True), password2="another long passphrase")
    assert differ.status_code == 400 and "The two passwords differ" in differ.content.decode()
    from accounts.models import User

    assert User.objects.count() == 1


def test_sign_up_is_closed_when_registration_is_off(settings):
    settings.ALLOW_REGISTRATION = False
    client = Client()
    assert client.get("/dashboard/signup/").status_code == 404
    assert "/dashboard/signup/" not in client.get("/dashboard/login/").content.decode()
