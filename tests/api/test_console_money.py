"""Money as people read it in the console (Django admin), the dashboard and the API, and
price versions that stay history in the console too. Django's test client on real pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import BillingRecord, ModelPrice
from core.money import decimal_str, format_money, to_nanos
from quotas.models import Quota
from tests import factories

from .conftest import PASSWORD
from .helpers import ledger, usage_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(operator):
    operator.is_superuser = True
    operator.save(update_fields=["is_superuser"])
    client = Client()
    assert client.login(username="operator", password=PASSWORD)
    return client


def _text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def _price_form(price: ModelPrice, **changes) -> dict:
    data = {
        "model": price.model_id,
        "input_per_1m": "0.15",
        "output_per_1m": "0.6",
        "cached_input_per_1m": "0.075",
        "per_request": "0",
        "currency": "USD",
        "effective_from_0": "",
        "effective_from_1": "",
        "effective_until_0": "",
        "effective_until_1": "",
        "note": "",
    }
    return {**data, **changes}


# --- one display rule ----------------------------------------------------------------------------


def test_one_rounding_rule_a_charge_and_its_ledger_row_read_the_same():
    charge = 102_300  # $0.0001023
    assert format_money(charge) == "$0.000103"
    assert format_money(-charge) == "-$0.000103"
    assert format_money(1) == "$0.000001"  # a charge is never shown as zero
    assert format_money(to_nanos("1250")) == "$1,250.00"
    assert decimal_str(0) == "0.000000000" and decimal_str(-charge) == "-0.000102300"


def test_usage_page_and_ledger_show_the_same_charge_alike(alice):
    usage_log(alice, cost="0.0001023")
    ledger(alice, amount="-0.0001023", kind=BillingRecord.Kind.USAGE)
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    usage = _text(client.get("/dashboard/usage/"))
    billing = _text(client.get("/dashboard/billing/"))
    assert "$0.000103" in usage and "$0.000102" not in usage
    assert "-$0.000103" in billing and "$0.000102" not in billing


def test_dashboard_quota_reads_as_money(alice):
    Quota.objects.create(user=alice, metric="cost", period="day", limit=to_nanos("5"))
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    page = _text(client.get("/dashboard/"))
    assert "$5.00 of spending per day" in page and "5000000000" not in page


# --- console lists and forms ---------------------------------------------------------------------


def test_price_list_shows_currency_per_million(console):
    factories.PriceFactory(model=factories.ModelFactory(slug="gpt-4o-mini"))
    page = _text(console.get("/admin/billing/modelprice/"))
    assert "$0.15 per 1M" in page and "$0.60 per 1M" in page and "$0.075 per 1M" in page
    assert "150000000" not in page and "150,000,000" not in page


def test_add_price_on_first_save_defaults_to_now_and_takes_dollars(console):
    model = factories.ModelFactory(slug="fresh-model")
    form = console.get("/admin/billing/modelprice/add/")
    assert form.status_code == 200
    assert 'name="effective_from_0" value="' in form.content.decode()  # filled in: now
    before = timezone.now() - timedelta(seconds=1)
    response = console.post(
        "/admin/billing/modelprice/add/", _price_form(ModelPrice(model=model), input_per_1m="2.50")
    )
    assert response.status_code == 302, _text(response)[-3000:]
    price = ModelPrice.objects.get(model=model)
    assert price.input_per_1m == to_nanos("2.50") and price.output_per_1m == to_nanos("0.6")
    assert before <= price.effective_from <= timezone.now()


def test_editing_a_billed_price_publishes_a_new_version(console, alice):
    price = factories.PriceFactory(model=factories.ModelFactory(slug="billed-model"))
    usage_log(alice, price=price)
    url = f"/admin/billing/modelprice/{price.pk}/change/"
    page = _text(console.get(url))
    assert 'name="input_per_1m" value="0.15"' in page
    response = console.post(url, _price_form(price, input_per_1m="0.20", note="new list price"), follow=True)
    assert response.status_code == 200
    assert "new version effective now" in _text(response)
    old, new = ModelPrice.objects.filter(model=price.model).order_by("created_at", "pk")
    assert old.pk == price.pk and old.input_per_1m == to_nanos("0.15"), "billed amounts are history"
    assert old.effective_until is not None and old.effective_until <= timezone.now()
    assert new.input_per_1m == to_nanos("0.20") and new.effective_from == old.effective_until
    assert new.effective_until is None and new.note == "new list price"
    assert old.effective_from == price.effective_from and old.model_id == price.model_id


def test_billed_price_keeps_its_start_and_changes_its_note_in_place(console, alice):
    price = factories.PriceFactory(model=factories.ModelFactory(slug="noted-model"))
    usage_log(alice, price=price)
    url = f"/admin/billing/modelprice/{price.pk}/change/"
    response = console.post(url, {**_price_form(price, note="typo fixed"), "effective_from_0": "2020-01-01"})
    assert response.status_code == 302
    assert ModelPrice.objects.filter(model=price.model).count() == 1
    price.refresh_from_db()
    assert price.note == "typo fixed" and price.effective_from > timezone.now() - timedelta(days=2)


def test_unbilled_price_is_corrected_in_place(console):
    price = factories.PriceFactory(model=factories.ModelFactory(slug="typo-model"))
    url = f"/admin/billing/modelprice/{price.pk}/change/"
    form = _price_form(price, input_per_1m="0.25", effective_from_0="2026-01-01", effective_from_1="00:00")
    assert console.post(url, form).status_code == 302
    assert ModelPrice.objects.get(model=price.model).input_per_1m == to_nanos("0.25")


def test_quota_form_takes_an_amount_for_cost_and_a_count_otherwise(console, alice):
    data = {"user": alice.pk, "api_key": "", "metric": "cost", "period": "day", "status": "active"}
    page = _text(console.get("/admin/quotas/quota/add/"))
    assert "Cost (money)" in page and "nanos" not in page
    assert console.post("/admin/quotas/quota/add/", {**data, "limit": "5.00"}).status_code == 302
    quota = Quota.objects.get(user=alice, metric="cost")
    assert quota.limit == to_nanos("5")
    assert "$5.00" in _text(console.get("/admin/quotas/quota/"))
    assert 'value="5"' in _text(console.get(f"/admin/quotas/quota/{quota.pk}/change/"))
    refused = console.post("/admin/quotas/quota/add/", {**data, "metric": "requests", "limit": "1.5"})
    assert refused.status_code == 200 and "whole number" in _text(refused)
    counted = console.post("/admin/quotas/quota/add/", {**data, "metric": "requests", "limit": "1,000"})
    assert counted.status_code == 302
    assert Quota.objects.get(user=alice, metric="requests").limit == 1000


# --- keys for users ------------------------------------------------------------------------------


def test_operator_creates_a_key_for_a_user_shown_once(console, alice):
    from keys.models import APIKey
    from keys.services import hash_key

    user_page = _text(console.get(f"/admin/accounts/user/{alice.pk}/change/"))
    assert f'href="/admin/keys/apikey/add/?user={alice.pk}"' in user_page
    form = console.get(f"/admin/keys/apikey/add/?user={alice.pk}")
    assert form.status_code == 200 and f'value="{alice.pk}"' in form.content.decode()
    created = console.post(
        "/admin/keys/apikey/add/",
        {
            "user": alice.pk,
            "name": "for the batch job",
            "budget": "2.50",
            "rpm_limit": "60",
            "allowed_models": "",
        },
    )
    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    plain = re.search(r'id="new-key"[^>]*>(sk-gw-[^<]+)<', created.content.decode()).group(1)
    key = APIKey.objects.get(key_hash=hash_key(plain))
    assert (key.user_id, key.name, key.budget, key.rpm_limit) == (
        alice.pk,
        "for the batch job",
        to_nanos("2.5"),
        60,
    )
    for page in ("/admin/keys/apikey/", f"/admin/keys/apikey/{key.pk}/change/", "/admin/"):
        assert plain not in console.get(page).content.decode(), page
    refused = console.post("/admin/keys/apikey/add/", {"user": alice.pk, "budget": "-1"})
    assert refused.status_code == 200 and "cannot be negative" in _text(refused)
    assert APIKey.objects.count() == 1


def test_a_usage_log_and_a_ledger_row_show_money_on_their_pages(console, alice):
    log = usage_log(alice, cost="0.0001023")
    row = ledger(alice, amount="-0.0001023", kind=BillingRecord.Kind.USAGE)
    log_page = _text(console.get(f"/admin/billing/usagelog/{log.pk}/change/"))
    row_page = _text(console.get(f"/admin/billing/billingrecord/{row.pk}/change/"))
    assert "$0.000103" in log_page and "102300" not in log_page and "102,300" not in log_page
    assert "-$0.000103" in row_page and "102300" not in row_page and "102,300" not in row_page


def test_midjourney_task_pages_show_money(console, alice):
    from jobs.models import MidjourneyTask

    now = timezone.now()
    task = MidjourneyTask.objects.create(
        task_id="1700000000000001", user=alice, action="IMAGINE", model="mj_imagine",
        price=to_nanos("0.05"), charged=to_nanos("0.05"), submitted_at=now, refreshed_at=now,
    )  # fmt: skip
    listing = _text(console.get("/admin/jobs/midjourneytask/"))
    detail = _text(console.get(f"/admin/jobs/midjourneytask/{task.pk}/change/"))
    assert "$0.05" in listing and "50000000" not in listing and "50,000,000" not in listing
    assert detail.count("$0.05") >= 2 and "50000000" not in detail and "50,000,000" not in detail


def test_dashboard_models_page_shows_prices_to_the_nano(alice):
    model = factories.ModelFactory(slug="cheap-embed", type="embedding")
    factories.RouteFactory(model=model)
    # $0.00000002 per 1M in
    factories.PriceFactory(model=model, input_per_1m=20, output_per_1m=0, cached_input_per_1m=0)
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    page = _text(client.get("/dashboard/models/"))
    assert "$0.00000002" in page and "$0.000001" not in page


def test_the_management_api_writes_amounts_without_exponents(api, staff_api, alice):
    """Zero and tiny amounts everywhere the API shows money: plain decimals, never ``0E-9``."""
    from .helpers import daily

    key = factories.RouteFactory(model=factories.ModelFactory(slug="free-model")).model
    factories.PriceFactory(model=key, input_per_1m=0, output_per_1m=0, cached_input_per_1m=0)
    usage_log(alice, cost="0")
    daily(alice, cost="0")
    ledger(alice, amount="0.000000001")
    Quota.objects.create(user=alice, metric="cost", period="day", limit=0)
    pages = [
        *(
            api.get(f"/api/me/{page}/")
            for page in ("usage", "usage/daily", "ledger", "balance", "quotas", "models")
        ),
        *(staff_api.get(f"/api/admin/{page}/") for page in ("users", "prices", "quotas", "usage", "ledger")),
    ]
    for response in pages:
        assert response.status_code == 200, response.content
        text = response.content.decode()
        assert not re.search(r'[":\s]-?\d+(\.\d+)?[eE][-+]?\d+[",}\]]', text), text
    assert '"0.000000000"' in pages[0].content.decode()


def test_a_billed_price_cannot_be_deleted_in_the_console(console, alice):
    billed = factories.PriceFactory(model=factories.ModelFactory(slug="kept-model"))
    unused = factories.PriceFactory(model=factories.ModelFactory(slug="spare-model"))
    usage_log(alice, price=billed)
    page = console.get(f"/admin/billing/modelprice/{billed.pk}/delete/")
    assert page.status_code == 200 and "requests were billed with it" in _text(page)
    console.post(f"/admin/billing/modelprice/{billed.pk}/delete/", {"post": "yes"})
    bulk = {"action": "delete_selected", "_selected_action": [billed.pk, unused.pk], "post": "yes"}
    assert "requests were billed with it" in _text(console.post("/admin/billing/modelprice/", bulk))
    assert ModelPrice.objects.count() == 2
    console.post("/admin/billing/modelprice/", {**bulk, "_selected_action": [unused.pk]})
    assert list(ModelPrice.objects.values_list("pk", flat=True)) == [billed.pk]


# --- bulk price editor -----------------------------------------------------------------------


def _bulk_post(page_rows: list[dict]) -> dict:
    data = {"form-TOTAL_FORMS": str(len(page_rows)), "form-INITIAL_FORMS": str(len(page_rows))}
    for index, row in enumerate(page_rows):
        data.update({f"form-{index}-{name}": value for name, value in row.items()})
    return data


def test_bulk_price_editor_publishes_new_versions_only_for_changed_rows(console, alice):
    billed = factories.PriceFactory(model=factories.ModelFactory(slug="a-billed"))  # $0.15 / $0.60
    usage_log(alice, price=billed)
    unpriced = factories.ModelFactory(slug="b-unpriced")
    untouched = factories.PriceFactory(model=factories.ModelFactory(slug="c-untouched"))
    url = "/admin/billing/modelprice/bulk/"
    assert url in console.get("/admin/billing/modelprice/").content.decode()  # the link to it
    page = _text(console.get(url))
    assert "no price: free" in page and 'value="0.15"' in page and 'value="0.6"' in page
    rows = [
        {"model": billed.model_id, "input_per_1m": "0.2", "output_per_1m": "0.6",
         "cached_input_per_1m": "0.075", "per_request": "0"},
        {"model": unpriced.pk, "input_per_1m": "2.50", "output_per_1m": "10",
         "cached_input_per_1m": "1.25", "per_request": "0"},
        {"model": untouched.model_id, "input_per_1m": "0.15", "output_per_1m": "0.6",
         "cached_input_per_1m": "0.075", "per_request": "0"},
    ]  # fmt: skip
    response = console.post(url, _bulk_post(rows), follow=True)
    assert "New prices effective now for 2 model(s): a-billed, b-unpriced." in _text(response)
    old, new = ModelPrice.objects.filter(model=billed.model).order_by("effective_from", "id")
    assert old.pk == billed.pk and old.input_per_1m == to_nanos("0.15"), "billed amounts are history"
    assert old.effective_until is not None and old.effective_until <= new.effective_from
    assert (new.input_per_1m, new.output_per_1m) == (to_nanos("0.2"), to_nanos("0.6"))
    (first,) = ModelPrice.objects.filter(model=unpriced)
    assert (first.input_per_1m, first.output_per_1m, first.cached_input_per_1m) == (
        to_nanos("2.5"), to_nanos("10"), to_nanos("1.25"),
    )  # fmt: skip
    assert list(ModelPrice.objects.filter(model=untouched.model)) == [untouched]
    untouched.refresh_from_db()
    assert untouched.effective_until is None


def test_bulk_price_editor_refuses_negative_amounts_and_changes_nothing(console):
    price = factories.PriceFactory(model=factories.ModelFactory(slug="a-model"))
    row = {"model": price.model_id, "input_per_1m": "-1", "output_per_1m": "0.6",
           "cached_input_per_1m": "0.075", "per_request": "0"}  # fmt: skip
    response = console.post("/admin/billing/modelprice/bulk/", _bulk_post([row]))
    assert response.status_code == 200 and "A price cannot be negative." in _text(response)
    assert list(ModelPrice.objects.all()) == [price]
