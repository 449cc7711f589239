"""/api/me/: keys, usage, ledger, balance, quotas, redemption, models."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import PriceGroup
from billing.models import BillingRecord
from billing.services import redemption_codes_generate
from core.money import to_nanos
from keys.models import APIKey
from keys.services import hash_key
from quotas.models import QuotaUsage
from quotas.periods import period_bounds
from tests import factories

from .helpers import daily, ledger, usage_log, world_of

pytestmark = pytest.mark.django_db


# --- keys --------------------------------------------------------------------------------------


def test_create_key_returns_the_plain_key_once(api, alice):
    response = api.post(
        "/api/me/keys/",
        {
            "name": "laptop",
            "allowed_models": ["gpt-4o-mini"],
            "allowed_ips": ["10.0.0.0/8", "192.0.2.1"],
            "rpm_limit": 60,
            "budget": "5.5",
            "metadata": {"team": "a"},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    plain = body["key"]
    assert plain.startswith("sk-gw-") and body["prefix"] == plain[:12]
    assert body["budget"] == "5.500000000" and body["spent"] == "0.000000000"
    assert body["allowed_ips"] == ["10.0.0.0/8", "192.0.2.1/32"]
    key = APIKey.objects.get(pk=body["id"])
    assert key.user == alice and key.key_hash == hash_key(plain)
    # afterwards: prefix only, never the key or its hash
    for response in (api.get(f"/api/me/keys/{key.pk}/"), api.get("/api/me/keys/")):
        text = response.content.decode()
        assert plain not in text and key.key_hash not in text and "key_hash" not in text
        assert key.prefix in text


def test_create_key_validation_is_a_400(api):
    cases = [
        {"allowed_ips": ["not-an-ip"]},
        {"budget": 1.5},  # floats are not exact
        {"budget": "-1"},
        {"budget": "1.0000000001"},
        {"rpm_limit": 0},
        {"rpm_limit": 2**40},
        {"expires_at": (timezone.now() - timedelta(days=1)).isoformat()},
        {"metadata": ["not", "an", "object"]},
        {"metadata": {"a\x00": 1}},
        {"name": "x" * 101},
    ]
    for payload in cases:
        response = api.post("/api/me/keys/", payload)
        assert response.status_code == 400, (payload, response.content)
        assert isinstance(response.json(), dict)
    assert not APIKey.objects.exists()


def test_update_key(api, alice):
    key = api.post("/api/me/keys/", {"name": "old"}).json()
    expires = (timezone.now() + timedelta(days=7)).replace(microsecond=0)
    response = api.patch(
        f"/api/me/keys/{key['id']}/",
        {
            "name": "new",
            "tpm_limit": 1000,
            "concurrency_limit": 2,
            "allowed_models": ["a", "b"],
            "allowed_ips": ["::1"],
            "expires_at": expires.isoformat(),
            "budget": None,
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["tpm_limit"], body["allowed_ips"]) == ("new", 1000, ["::1/128"])
    stored = APIKey.objects.get(pk=key["id"])
    assert stored.expires_at == expires and stored.allowed_models == ["a", "b"]
    assert "key" not in body


def test_revoked_key_cannot_be_changed_or_regenerated(api):
    key = api.post("/api/me/keys/", {}).json()
    revoked = api.post(f"/api/me/keys/{key['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_at"]
    assert api.patch(f"/api/me/keys/{key['id']}/", {"name": "x"}).status_code == 400
    assert api.post(f"/api/me/keys/{key['id']}/regenerate/", {}).status_code == 400


def test_regenerate_keeps_the_old_key_for_a_grace_period(api):
    old = api.post("/api/me/keys/", {"name": "ci", "rpm_limit": 10}).json()
    response = api.post(f"/api/me/keys/{old['id']}/regenerate/", {"grace_seconds": 600})
    assert response.status_code == 201, response.content
    new = response.json()
    assert new["key"] != old["key"] and new["name"] == "ci" and new["rpm_limit"] == 10
    previous = APIKey.objects.get(pk=old["id"])
    assert previous.replaced_by_id == new["id"] and previous.status == "active"
    assert timedelta(seconds=590) < previous.valid_until - timezone.now() <= timedelta(seconds=600)
    # a replaced key cannot be regenerated twice; the grace period is bounded
    assert api.post(f"/api/me/keys/{old['id']}/regenerate/", {}).status_code == 400
    too_long = api.post(f"/api/me/keys/{new['id']}/regenerate/", {"grace_seconds": 10**9})
    assert too_long.status_code == 400 and "grace_seconds" in too_long.json()


def test_key_list_filters_and_orders(api, alice):
    for name in ("b", "a", "c"):
        api.post("/api/me/keys/", {"name": name})
    revoked = api.post("/api/me/keys/", {"name": "gone"}).json()
    api.post(f"/api/me/keys/{revoked['id']}/revoke/")
    page = api.get("/api/me/keys/", {"ordering": "name", "status": "active"}).json()
    assert page["count"] == 3 and [k["name"] for k in page["results"]] == ["a", "b", "c"]
    assert set(page) == {"count", "next", "previous", "results"}
    assert api.get("/api/me/keys/", {"search": "go"}).json()["count"] == 1
    assert api.get("/api/me/keys/", {"page_size": 2}).json()["next"]
    assert api.get("/api/me/keys/", {"ordering": "key_hash"}).status_code == 400
    assert api.get("/api/me/keys/", {"page": 99}).status_code == 404


# --- usage, ledger, balance --------------------------------------------------------------------


def test_usage_logs_filter_by_date_key_model_and_status(api, alice):
    key = APIKey.objects.get(pk=api.post("/api/me/keys/", {}).json()["id"])
    usage_log(alice, key, model="gpt-4o-mini")
    usage_log(alice, None, model="gpt-4o", status=429)
    usage_log(alice, key, model="gpt-4o-mini", ago=timedelta(days=3))

    def count(**params):
        response = api.get("/api/me/usage/", params)
        assert response.status_code == 200, response.content
        return response.json()["count"]

    assert count() == 3
    assert count(api_key=key.pk) == 2
    assert count(model="gpt-4o") == 1
    assert count(status="error") == 1 and count(status="success") == 2 and count(status_code=429) == 1
    today = timezone.localdate()
    assert count(start=today.isoformat()) == 2
    assert count(end=(today - timedelta(days=1)).isoformat()) == 1
    assert count(start=(timezone.now() - timedelta(hours=1)).isoformat()) == 2
    first = api.get("/api/me/usage/").json()["results"][0]
    assert first["cost"] == "0.001000000" and "provider" not in first and "client_ip" not in first
    assert api.get("/api/me/usage/", {"start": "yesterday"}).status_code == 400
    assert api.get("/api/me/usage/", {"status_code": 1000}).status_code == 400


def test_daily_usage_fills_missing_days(api, alice):
    daily(alice, days_ago=0, requests=5, cost="0.01")
    daily(alice, days_ago=0, requests=2, cost="0.02", model="other")
    daily(alice, days_ago=2, requests=1)
    days = api.get("/api/me/usage/daily/", {"days": 3}).json()
    assert [d["requests"] for d in days] == [1, 0, 7]
    assert days[-1]["cost"] == "0.030000000" and days[-1]["day"] == timezone.localdate().isoformat()
    assert api.get("/api/me/usage/daily/", {"days": 0}).status_code == 400


def test_ledger_and_balance(api, alice):
    ledger(alice, "2.5")
    ledger(alice, "-0.25", kind=BillingRecord.Kind.USAGE)
    rows = api.get("/api/me/ledger/").json()
    assert rows["count"] == 2 and {r["amount"] for r in rows["results"]} == {"2.500000000", "-0.250000000"}
    assert api.get("/api/me/ledger/", {"kind": "usage"}).json()["count"] == 1
    assert api.get("/api/me/ledger/", {"ordering": "amount"}).json()["results"][0]["amount"] == "-0.250000000"
    alice.credit_limit = to_nanos("3")
    alice.save()
    assert api.get("/api/me/balance/").json() == {
        "balance": "10.000000000",
        "credit_limit": "3.000000000",
        "available": "13.000000000",
        "currency": "USD",
    }


def test_quotas_show_user_and_key_quotas_with_use(api, alice):
    things = world_of(alice)
    start, _ = period_bounds("day", timezone.now())
    QuotaUsage.objects.create(quota=things["user_quota"], period_start=start, used=40)
    rows = api.get("/api/me/quotas/").json()
    by_scope = {row["scope"]: row for row in rows}
    assert by_scope["user"]["limit"] == "100" and by_scope["user"]["used"] == "40"
    assert by_scope["user"]["remaining"] == "60" and by_scope["user"]["api_key"] is None
    assert by_scope["key"]["limit"] == "5.000000000" and by_scope["key"]["api_key"] == things["key"].pk


def test_redeem_a_code_once(api, alice):
    [code] = redemption_codes_generate(count=1, amount=to_nanos("7.25"))
    response = api.post("/api/me/redeem/", {"code": code})
    assert response.status_code == 201, response.content
    assert response.json()["amount"] == "7.250000000" and response.json()["kind"] == "redemption"
    alice.refresh_from_db()
    assert alice.balance == to_nanos("17.25")
    again = api.post("/api/me/redeem/", {"code": code})
    assert again.status_code == 400 and again.json() == {"code": ["This code has already been used."]}
    assert api.post("/api/me/redeem/", {"code": "rc-nope"}).json() == {"code": ["This code does not exist."]}
    assert api.post("/api/me/redeem/", {}).status_code == 400


def test_models_with_prices_after_the_group_multiplier(api, alice):
    route = factories.RouteFactory(model=factories.ModelFactory(slug="gpt-4o-mini"))
    factories.PriceFactory(model=route.model, input_per_1m=to_nanos("1"), output_per_1m=to_nanos("2"))
    factories.RouteFactory(model=factories.ModelFactory(slug="unpriced"))
    factories.RouteFactory(model=factories.ModelFactory(slug="off"), enabled=False)
    factories.ModelFactory(slug="no-route")
    models = api.get("/api/me/models/").json()
    assert [m["slug"] for m in models] == ["gpt-4o-mini", "unpriced"]
    assert models[0]["price"]["input_per_1m"] == "1.000000000" and models[0]["multiplier"] is None
    assert models[1]["price"] is None

    alice.group = PriceGroup.objects.create(name="resellers", multiplier=Decimal("1.5"))
    alice.save()
    price = api.get("/api/me/models/").json()[0]
    assert price["multiplier"] == "1.5000"
    assert (
        price["price"]["input_per_1m"] == "1.500000000" and price["price"]["output_per_1m"] == "3.000000000"
    )


def test_me_endpoints_need_a_login(anon):
    for path in ("keys/", "usage/", "usage/daily/", "ledger/", "balance/", "quotas/", "models/"):
        assert anon.get(f"/api/me/{path}").status_code == 401
    assert anon.post("/api/me/redeem/", {"code": "x"}).status_code == 401
