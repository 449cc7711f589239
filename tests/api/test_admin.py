"""/api/admin/: staff endpoints over users, keys, providers, models, prices, routes, quotas,
usage, the ledger and redemption codes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import PriceGroup, User
from billing.models import BillingRecord, ModelPrice, RedemptionCode
from core.money import to_nanos
from keys.models import APIKey
from keys.services import api_key_create
from providers import crypto
from providers.models import Model, Provider, ProviderModel
from quotas.models import Quota, QuotaUsage
from tests import factories

from .helpers import ledger, usage_log, world_of

pytestmark = pytest.mark.django_db


# --- users -------------------------------------------------------------------------------------


def test_create_list_and_update_users(staff_api, alice):
    group = PriceGroup.objects.create(name="vip")
    payload = {"username": "newbie", "email": "n@example.com", "password": "a fine long passphrase"}
    response = staff_api.post("/api/admin/users/", {**payload, "group": group.pk, "credit_limit": "2.50"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["credit_limit"] == "2.500000000" and body["group_name"] == "vip" and "password" not in body
    assert User.objects.get(username="newbie").check_password("a fine long passphrase")
    assert staff_api.post("/api/admin/users/", {"username": "newbie"}).status_code == 400
    assert staff_api.post("/api/admin/users/", {"username": "x", "group": 999}).status_code == 400

    listing = staff_api.get("/api/admin/users/", {"search": "newb"}).json()
    assert [u["username"] for u in listing["results"]] == ["newbie"]
    assert staff_api.get("/api/admin/users/", {"is_staff": True}).json()["count"] == 1
    assert (
        staff_api.get("/api/admin/users/", {"ordering": "-username"}).json()["results"][0]["username"]
        == "operator"
    )

    changed = staff_api.patch(
        f"/api/admin/users/{alice.pk}/", {"full_name": "A", "credit_limit": "1", "group": None}
    )
    assert changed.status_code == 200 and changed.json()["credit_limit"] == "1.000000000"
    assert staff_api.patch(f"/api/admin/users/{alice.pk}/", {"credit_limit": "-1"}).status_code == 400
    assert staff_api.get("/api/admin/users/999999/").status_code == 404


def test_suspend_activate_and_delete_follow_the_rules(staff_api, operator, alice):
    things = world_of(alice)
    assert staff_api.post(f"/api/admin/users/{alice.pk}/suspend/").json()["status"] == "suspended"
    assert staff_api.post(f"/api/admin/users/{alice.pk}/activate/").json()["status"] == "active"
    assert staff_api.delete(f"/api/admin/users/{alice.pk}/").status_code == 204
    alice.refresh_from_db()
    # "deleted" without deleting: the row, the ledger and the usage stay; keys are revoked
    assert (alice.status, alice.is_active, alice.has_usable_password()) == ("deleted", False, False)
    assert APIKey.objects.get(pk=things["key"].pk).status == "revoked"
    assert BillingRecord.objects.filter(user=alice).exists()
    assert staff_api.post(f"/api/admin/users/{alice.pk}/activate/").status_code == 400
    # nobody locks themselves out
    for action in ("suspend/",):
        assert staff_api.post(f"/api/admin/users/{operator.pk}/{action}").status_code == 400
    assert staff_api.delete(f"/api/admin/users/{operator.pk}/").status_code == 400
    assert staff_api.patch(f"/api/admin/users/{operator.pk}/", {"is_staff": False}).status_code == 400


def test_balance_adjustment_writes_one_ledger_row(staff_api, operator, alice):
    response = staff_api.post(
        f"/api/admin/users/{alice.pk}/balance-adjustments/",
        {"amount": "-2.5", "kind": "refund", "description": "oops"},
    )
    assert response.status_code == 201, response.content
    assert response.json()["amount"] == "-2.500000000" and response.json()["balance_after"] == "7.500000000"
    record = BillingRecord.objects.get(user=alice)
    assert record.created_by == operator and record.kind == "refund"
    for bad in ({"amount": "0"}, {"amount": "abc"}, {"amount": "1", "kind": "usage"}, {"amount": "1e30"}):
        assert staff_api.post(f"/api/admin/users/{alice.pk}/balance-adjustments/", bad).status_code == 400
    assert BillingRecord.objects.filter(user=alice).count() == 1
    ledger_rows = staff_api.get("/api/admin/ledger/", {"user": alice.pk}).json()["results"]
    assert [(r["amount"], r["created_by"]) for r in ledger_rows] == [("-2.500000000", operator.pk)]


# --- keys --------------------------------------------------------------------------------------


def test_staff_manage_any_users_keys(staff_api, alice, bob):
    created = staff_api.post("/api/admin/keys/", {"user": alice.pk, "name": "from ops"})
    assert created.status_code == 201 and created.json()["key"].startswith("sk-gw-")
    assert created.json()["user"] == alice.pk
    api_key_create(user=bob)
    assert staff_api.get("/api/admin/keys/").json()["count"] == 2
    assert staff_api.get("/api/admin/keys/", {"user": alice.pk}).json()["count"] == 1
    key_id = created.json()["id"]
    assert staff_api.patch(f"/api/admin/keys/{key_id}/", {"rpm_limit": 5}).json()["rpm_limit"] == 5
    regenerated = staff_api.post(f"/api/admin/keys/{key_id}/regenerate/", {"grace_seconds": 0})
    assert regenerated.status_code == 201
    assert staff_api.post(f"/api/admin/keys/{regenerated.json()['id']}/revoke/").json()["status"] == "revoked"
    assert staff_api.post("/api/admin/keys/", {"user": 999}).status_code == 400


# --- providers, models, routes, prices --------------------------------------------------------


def test_provider_credentials_are_write_only(staff_api):
    response = staff_api.post(
        "/api/admin/providers/",
        {
            "name": "openai-main",
            "type": "openai",
            "base_url": "https://api.openai.com/v1/",
            "api_key": "sk-secret-1",
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["has_credentials"] is True and body["base_url"] == "https://api.openai.com/v1"
    provider = Provider.objects.get(pk=body["id"])
    assert crypto.decrypt(provider.credentials_encrypted) == "sk-secret-1"
    for text in (response.content, staff_api.get(f"/api/admin/providers/{provider.pk}/").content,
                 staff_api.get("/api/admin/providers/").content):  # fmt: skip
        assert b"sk-secret-1" not in text and provider.credentials_encrypted.encode() not in text
        assert b"credentials_encrypted" not in text

    changed = staff_api.patch(
        f"/api/admin/providers/{provider.pk}/",
        {"api_key": "sk-secret-2", "priority": 5, "status": "disabled", "status_reason": "maintenance"},
    )
    assert changed.status_code == 200 and b"sk-secret-2" not in changed.content
    provider.refresh_from_db()
    assert crypto.decrypt(provider.credentials_encrypted) == "sk-secret-2"
    assert (provider.priority, provider.status, provider.status_reason) == (5, "disabled", "maintenance")
    # invalid input is a 400 in DRF's format
    for bad in ({"base_url": "ftp://x"}, {"type": "nope"}, {"weight": 0}, {"extra_headers": {"a": 1}},
                {"extra_headers": {"a": "b\nc"}}, {"name": ""}):  # fmt: skip
        response = staff_api.patch(f"/api/admin/providers/{provider.pk}/", bad)
        assert response.status_code == 400, (bad, response.content)
    duplicate = staff_api.post(
        "/api/admin/providers/", {"name": "openai-main", "type": "openai", "base_url": "http://x"}
    )
    assert duplicate.status_code == 400 and "name" in duplicate.json()


def test_probe_a_provider(staff_api, fake):
    provider = factories.ProviderFactory(base_url=fake.url + "/v1", status=Provider.Status.AUTO_DISABLED)
    response = staff_api.post(f"/api/admin/providers/{provider.pk}/probe/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] is True and body["status"] == 200 and body["health_status"] == "healthy"
    assert body["provider_status"] == "enabled"  # a passing probe re-enables an auto-disabled provider
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-upstream-secret"
    broken = factories.ProviderFactory(base_url="http://127.0.0.1:9/v1")
    failed = staff_api.post(f"/api/admin/providers/{broken.pk}/probe/").json()
    assert failed["ok"] is False and failed["error"]


def test_provider_delete_rules(staff_api, alice):
    unused = factories.RouteFactory()
    response = staff_api.delete(f"/api/admin/providers/{unused.provider_id}/")
    assert response.status_code == 204
    assert not ProviderModel.objects.filter(pk=unused.pk).exists()
    used = factories.ProviderFactory()
    usage_log(alice, provider=used)
    conflict = staff_api.delete(f"/api/admin/providers/{used.pk}/")
    assert conflict.status_code == 409 and "disable" in conflict.json()["detail"]
    assert Provider.objects.filter(pk=used.pk).exists()


def test_models_routes_and_prices(staff_api, alice):
    model = staff_api.post("/api/admin/models/", {"slug": "gpt-x", "type": "chat", "context_length": 128000})
    assert model.status_code == 201, model.content
    model_id = model.json()["id"]
    assert staff_api.post("/api/admin/models/", {"slug": "gpt-x"}).status_code == 400
    assert (
        staff_api.patch(f"/api/admin/models/{model_id}/", {"status": "deprecated"}).json()["status"]
        == "deprecated"
    )
    assert staff_api.get("/api/admin/models/", {"search": "gpt-"}).json()["count"] == 1

    provider = factories.ProviderFactory()
    route = staff_api.post(
        "/api/admin/routes/",
        {"provider": provider.pk, "model": model_id, "upstream_model": "gpt-x-2025", "weight": 3,
         "extra_params": {"temperature": 0}},
    )  # fmt: skip
    assert route.status_code == 201, route.content
    assert route.json()["model_slug"] == "gpt-x" and route.json()["provider_name"] == provider.name
    again = staff_api.post("/api/admin/routes/", {"provider": provider.pk, "model": model_id})
    assert again.status_code == 400
    assert staff_api.post("/api/admin/routes/", {"provider": 999, "model": model_id}).status_code == 400
    route_id = route.json()["id"]
    assert staff_api.patch(f"/api/admin/routes/{route_id}/", {"enabled": False}).json()["enabled"] is False
    assert staff_api.get("/api/admin/routes/", {"model": model_id, "enabled": False}).json()["count"] == 1

    price = staff_api.post(
        "/api/admin/prices/",
        {"model": model_id, "input_per_1m": "2.5", "output_per_1m": "10", "note": "launch"},
    )
    assert price.status_code == 201, price.content
    assert price.json()["input_per_1m"] == "2.500000000" and price.json()["per_request"] == "0.000000000"
    price_id = price.json()["id"]
    assert staff_api.get("/api/admin/prices/", {"model": model_id, "in_force": True}).json()["count"] == 1
    # amounts are history: only the end and the note change
    assert staff_api.patch(f"/api/admin/prices/{price_id}/", {"input_per_1m": "1"}).status_code == 200
    assert ModelPrice.objects.get(pk=price_id).input_per_1m == to_nanos("2.5")
    ended = staff_api.patch(f"/api/admin/prices/{price_id}/", {"effective_until": timezone.now().isoformat()})
    assert ended.status_code == 200
    past = (timezone.now() - timedelta(days=400)).isoformat()
    assert staff_api.patch(f"/api/admin/prices/{price_id}/", {"effective_until": past}).status_code == 400
    assert staff_api.post("/api/admin/prices/", {"model": model_id, "input_per_1m": "-1"}).status_code == 400

    # a model with routes or prices is not deleted; a billed price is not either
    assert staff_api.delete(f"/api/admin/models/{model_id}/").status_code == 409
    usage_log(alice, price=ModelPrice.objects.get(pk=price_id))
    assert staff_api.delete(f"/api/admin/prices/{price_id}/").status_code == 409
    assert staff_api.delete(f"/api/admin/routes/{route_id}/").status_code == 204
    unused_model = Model.objects.create(slug="lonely")
    assert staff_api.delete(f"/api/admin/models/{unused_model.pk}/").status_code == 204


# --- quotas, usage, ledger, redemption codes ---------------------------------------------------


def test_quotas(staff_api, alice):
    key = api_key_create(user=alice).key
    created = staff_api.post(
        "/api/admin/quotas/", {"user": alice.pk, "metric": "cost", "period": "month", "limit": "5"}
    )
    assert created.status_code == 201, created.content
    assert created.json()["limit"] == "5.000000000"
    assert Quota.objects.get(pk=created.json()["id"]).limit == to_nanos("5")
    on_key = staff_api.post(
        "/api/admin/quotas/", {"api_key": key.pk, "metric": "requests", "period": "day", "limit": "100"}
    )
    assert on_key.status_code == 201 and on_key.json()["limit"] == "100"
    for bad in (
        {"user": alice.pk, "api_key": key.pk, "metric": "requests", "period": "day", "limit": "1"},
        {"metric": "requests", "period": "day", "limit": "1"},
        {"user": alice.pk, "metric": "requests", "period": "day", "limit": "1.5"},
        {"user": alice.pk, "metric": "cost", "period": "day", "limit": "-1"},
        {"user": alice.pk, "metric": "tokens", "period": "week", "limit": "1"},
    ):
        assert staff_api.post("/api/admin/quotas/", bad).status_code == 400, bad
    quota_id = on_key.json()["id"]
    assert staff_api.patch(f"/api/admin/quotas/{quota_id}/", {"limit": "250"}).json()["limit"] == "250"
    assert staff_api.get("/api/admin/quotas/", {"user": alice.pk}).json()["count"] == 1
    QuotaUsage.objects.create(quota_id=quota_id, period_start=timezone.now(), used=1)
    assert staff_api.delete(f"/api/admin/quotas/{quota_id}/").status_code == 204
    assert not QuotaUsage.objects.filter(quota_id=quota_id).exists()


def test_usage_and_ledger_queries(staff_api, alice, bob):
    provider = factories.ProviderFactory()
    usage_log(alice, provider=provider, client_ip="192.0.2.1")
    usage_log(bob, status=502)
    ledger(alice, "1")
    all_logs = staff_api.get("/api/admin/usage/").json()
    assert all_logs["count"] == 2 and "client_ip" in all_logs["results"][0]
    assert staff_api.get("/api/admin/usage/", {"user": alice.pk}).json()["count"] == 1
    assert staff_api.get("/api/admin/usage/", {"provider": provider.pk}).json()["count"] == 1
    assert staff_api.get("/api/admin/usage/", {"status": "error"}).json()["results"][0]["user"] == bob.pk
    assert staff_api.get("/api/admin/ledger/", {"kind": "topup"}).json()["count"] == 1
    assert staff_api.get("/api/admin/usage/", {"user": "x"}).status_code == 400


def test_redemption_codes(staff_api, operator, alice):
    response = staff_api.post("/api/admin/redemption-codes/", {"count": 3, "amount": "5", "batch": "promo"})
    assert response.status_code == 201, response.content
    codes = response.json()["codes"]
    assert len(codes) == 3 and response.json()["amount"] == "5.000000000"
    listing = staff_api.get("/api/admin/redemption-codes/", {"batch": "promo"})
    text = listing.content.decode()
    assert (
        listing.json()["count"] == 3 and all(code not in text for code in codes) and "code_hash" not in text
    )
    row = RedemptionCode.objects.get(prefix=codes[0][:10])
    assert row.created_by == operator
    disabled = staff_api.post(f"/api/admin/redemption-codes/{row.pk}/disable/")
    assert disabled.json()["status"] == "disabled"
    from billing.services import RedemptionError, redemption_redeem

    with pytest.raises(RedemptionError):
        redemption_redeem(user=alice, code=codes[0])
    redemption_redeem(user=alice, code=codes[1])
    used = RedemptionCode.objects.get(prefix=codes[1][:10])
    assert staff_api.post(f"/api/admin/redemption-codes/{used.pk}/disable/").status_code == 400
    assert (
        staff_api.get("/api/admin/redemption-codes/", {"status": "redeemed"}).json()["results"][0][
            "redeemed_by"
        ]
        == alice.pk
    )
    for bad in ({"count": 0, "amount": "1"}, {"count": 1, "amount": "0"}, {"count": 5000, "amount": "1"}):
        assert staff_api.post("/api/admin/redemption-codes/", bad).status_code == 400


def test_pagination_is_the_same_everywhere(staff_api, alice, bob):
    for _ in range(3):
        api_key_create(user=alice)
        usage_log(alice)
    for path in ("keys", "usage", "users"):
        page = staff_api.get(f"/api/admin/{path}/", {"page_size": 2}).json()
        assert set(page) == {"count", "next", "previous", "results"} and len(page["results"]) == 2
        assert "page=2" in page["next"]
        second = staff_api.get(f"/api/admin/{path}/", {"page_size": 2, "page": 2}).json()
        assert second["previous"] is not None
        assert staff_api.get(f"/api/admin/{path}/", {"page_size": 0}).status_code == 400
