"""The foundation: settings, schema, health, services, admin, bootstrap."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from accounts import services as account_services
from accounts.models import User
from billing.models import BillingRecord, ModelPrice
from core.money import format_money, from_nanos, to_nanos
from keys import services as key_services
from keys.models import APIKey
from providers import crypto
from providers import services as provider_services
from providers.models import Provider
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


def run_django(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "DATABASE_URL",
            "nonsense",
            "configuration error: DATABASE_URL: unsupported database URL 'nonsense'",
        ),
        ("DATABASE_URL", "postgres://u@h:notaport/db", "configuration error: DATABASE_URL: the port"),
        ("REDIS_URL", "localhost:6379", "configuration error: REDIS_URL: expected redis://"),
        ("DJANGO_DEBUG", "maybe", "configuration error: DJANGO_DEBUG: expected a boolean"),
        ("JWT_ACCESS_TTL", "soon", "configuration error: JWT_ACCESS_TTL: expected a duration"),
        ("RELAY_MAX_BODY_BYTES", "12x", "configuration error: RELAY_MAX_BODY_BYTES: expected an integer"),
        ("SIGNUP_CREDIT", "-1", "configuration error: SIGNUP_CREDIT: must not be negative"),
        ("SIGNUP_CREDIT", "0.0000000001", "configuration error: SIGNUP_CREDIT: '0.0000000001' has more"),
        ("SIGNUP_CREDIT", "lots", "configuration error: SIGNUP_CREDIT: not an amount"),
        ("CREDENTIALS_KEYS", "short", "configuration error: CREDENTIALS_KEYS: each key must be 32"),
    ],
)
def test_bad_setting_stops_startup_with_one_line(name, value, expected):
    result = run_django({name: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(expected), result.stderr


def test_good_settings_start():
    result = run_django(
        {"DATABASE_URL": "postgres://u:p@db.example:5433/gw", "REDIS_URL": "redis://r:6379/1"}
    )
    assert result.returncode == 0, result.stderr


def test_sqlite_runs_in_wal_mode_with_busy_timeout(db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite-only pragma check; this run uses " + connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 20000
        cursor.execute("PRAGMA journal_mode")
        # the test database is in memory, where SQLite reports "memory"; a file gets "wal"
        assert cursor.fetchone()[0] in ("wal", "memory")


def test_sqlite_file_database_is_wal(tmp_path):
    db_path = tmp_path / "x.sqlite3"
    code = (
        "import django; django.setup();"
        "from django.db import connection;"
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{db_path}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "wal", result.stderr


def test_migrations_are_complete(db):
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


# --- schema -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_foreign_key_constraints_in_the_schema():
    found = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                "WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
            )
            found = cursor.fetchall()
        else:
            for table in connection.introspection.table_names(cursor):
                cursor.execute(f'PRAGMA foreign_key_list("{table}")')
                found += [(table, row) for row in cursor.fetchall()]
    # Django's contrib tables (auth_*, django_*) keep theirs; the project's must have none.
    ours = [row for row in found if not str(row[0]).startswith(("auth_", "django_"))]
    assert any(name.startswith("accounts_") for name in connection.introspection.table_names())
    assert ours == []


# --- money ------------------------------------------------------------------------------


def test_money_is_exact_nanos():
    assert to_nanos("0.000000001") == 1
    assert to_nanos("12.5") == 12_500_000_000
    assert from_nanos(to_nanos("0.1") + to_nanos("0.2")) == from_nanos(to_nanos("0.3"))
    with pytest.raises(ValueError):
        to_nanos("0.0000000001")
    with pytest.raises(ValueError):
        to_nanos("abc")
    assert format_money(to_nanos("-1.5")) == "-$1.50"


# --- services ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_balance_adjustment_writes_exactly_one_ledger_row(user):
    before = user.balance
    record = account_services.user_adjust_balance(user=user, amount=to_nanos("2.5"), description="gift")
    user.refresh_from_db()
    assert user.balance == before + to_nanos("2.5")
    assert BillingRecord.objects.filter(user=user).count() == 1
    assert record.balance_after == user.balance
    assert record.amount == to_nanos("2.5")
    record2 = account_services.user_adjust_balance(user=user, amount=-to_nanos("20"), kind="adjustment")
    user.refresh_from_db()
    assert record2.balance_after == user.balance == before + to_nanos("2.5") - to_nanos("20")
    total = sum(BillingRecord.objects.filter(user=user).values_list("amount", flat=True))
    assert total == user.balance - before


@pytest.mark.django_db
def test_balance_adjustment_rejects_bad_amounts(user):
    for bad in (0, 1.5, True):
        with pytest.raises(account_services.BalanceError):
            account_services.user_adjust_balance(user=user, amount=bad)
    assert BillingRecord.objects.count() == 0


@pytest.mark.django_db
def test_key_creation_stores_only_the_hash(user):
    issued = key_services.api_key_create(user=user, name="ci", allowed_ips=["10.0.0.0/8", "192.168.1.5"])
    assert issued.plain.startswith("sk-gw-") and len(issued.plain) > 40
    row = APIKey.objects.get(pk=issued.key.pk)
    assert row.key_hash == key_services.hash_key(issued.plain)
    assert row.prefix == issued.plain[:12]
    assert row.allowed_ips == ["10.0.0.0/8", "192.168.1.5/32"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_apikey")
        assert issued.plain not in repr(cursor.fetchall())


@pytest.mark.django_db
def test_key_rejects_bad_cidr(user):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        key_services.api_key_create(user=user, allowed_ips=["10.0.0.300"])


@pytest.mark.django_db
def test_key_revoke_and_rotate(user):
    from datetime import timedelta

    issued = key_services.api_key_create(user=user, name="old", rpm_limit=7)
    new = key_services.api_key_rotate(key=issued.key, grace=timedelta(hours=1))
    issued.key.refresh_from_db()
    assert issued.key.replaced_by_id == new.key.pk and issued.key.valid_until is not None
    assert new.key.rpm_limit == 7 and new.plain != issued.plain
    key_services.api_key_revoke(key=new.key)
    assert APIKey.objects.get(pk=new.key.pk).status == APIKey.Status.REVOKED


@pytest.mark.django_db
def test_credentials_round_trip_and_are_unreadable_in_the_database():
    provider = provider_services.provider_create(
        name="p", type="openai", base_url="https://api.example.com/v1/", api_key="sk-very-secret-upstream"
    )
    assert provider.base_url == "https://api.example.com/v1"
    assert provider_services.provider_get_credentials(provider=Provider.objects.get(pk=provider.pk)) == (
        "sk-very-secret-upstream"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_provider")
        assert "sk-very-secret-upstream" not in repr(cursor.fetchall())


@pytest.mark.django_db
def test_credentials_survive_key_rollout():
    from cryptography.fernet import Fernet

    old = provider_services.provider_create(
        name="p", type="openai", base_url="https://x/v1", api_key="secret1"
    )
    new_key = Fernet.generate_key().decode()
    from django.conf import settings

    with override_settings(CREDENTIALS_KEYS=[new_key, *settings.CREDENTIALS_KEYS]):
        assert crypto.decrypt(old.credentials_encrypted) == "secret1"
        rotated = crypto.reencrypt(old.credentials_encrypted)
    with override_settings(CREDENTIALS_KEYS=[new_key]):
        assert crypto.decrypt(rotated) == "secret1"
        with pytest.raises(crypto.CredentialError):
            crypto.decrypt(old.credentials_encrypted)


@pytest.mark.django_db
def test_provider_status_change_records_reason():
    provider = factories.ProviderFactory()
    provider_services.provider_set_status(provider=provider, status="auto_disabled", reason="upstream 401")
    provider.refresh_from_db()
    assert provider.status == "auto_disabled" and provider.status_reason == "upstream 401"
    assert provider.status_changed_at is not None


# --- health -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_ready_names_the_failed_check(client):
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["failed"] == ["redis"]
    assert response.json()["checks"]["database"] == "ok"


# --- admin ------------------------------------------------------------------------------

ADMIN_MODELS = [
    "accounts_user",
    "accounts_pricegroup",
    "keys_apikey",
    "providers_provider",
    "providers_model",
    "providers_providermodel",
    "billing_modelprice",
    "billing_usagelog",
    "billing_billingrecord",
    "billing_redemptioncode",
    "billing_dailyusage",
    "quotas_quota",
    "quotas_quotausage",
]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ADMIN_MODELS)
def test_admin_changelists_render(client, staff, name):
    client.force_login(staff)
    assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200


@pytest.mark.django_db
def test_admin_never_shows_secrets(client, staff):
    client.force_login(staff)
    provider = provider_services.provider_create(
        name="p", type="openai", base_url="https://x/v1", api_key="sk-upstream-do-not-show"
    )
    issued = key_services.api_key_create(user=staff, name="k")
    pages = [
        reverse("admin:providers_provider_change", args=[provider.pk]),
        reverse("admin:providers_provider_changelist"),
        reverse("admin:keys_apikey_change", args=[issued.key.pk]),
        reverse("admin:keys_apikey_changelist"),
    ]
    for page in pages:
        html = client.get(page).content.decode()
        assert "sk-upstream-do-not-show" not in html
        assert provider.credentials_encrypted not in html
        assert issued.plain not in html and issued.key.key_hash not in html
    assert issued.key.prefix in client.get(reverse("admin:keys_apikey_changelist")).content.decode()


@pytest.mark.django_db
def test_admin_credentials_are_write_only(client, staff):
    client.force_login(staff)
    provider = provider_services.provider_create(
        name="p", type="openai", base_url="https://x/v1", api_key="one"
    )
    url = reverse("admin:providers_provider_change", args=[provider.pk])
    form = {
        "name": "p",
        "type": "openai",
        "base_url": "https://x/v1",
        "api_version": "",
        "status": "enabled",
        "priority": 0,
        "weight": 1,
        "timeout_seconds": 60,
        "max_retries": 1,
        "extra_headers": "{}",
        "health_check_enabled": "on",
        "health_check_model": "",
        "routes-TOTAL_FORMS": 0,
        "routes-INITIAL_FORMS": 0,
        "routes-MIN_NUM_FORMS": 0,
        "routes-MAX_NUM_FORMS": 1000,
    }
    response = client.post(url, {**form, "api_key": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    provider.refresh_from_db()
    assert crypto.decrypt(provider.credentials_encrypted) == "one"  # empty keeps the secret
    client.post(url, {**form, "api_key": "two"})
    provider.refresh_from_db()
    assert crypto.decrypt(provider.credentials_encrypted) == "two"


@pytest.mark.django_db
def test_admin_actions_go_through_services(client, staff, user):
    client.force_login(staff)
    provider = factories.ProviderFactory()
    changelist = reverse("admin:providers_provider_changelist")
    client.post(changelist, {"action": "disable_providers", "_selected_action": [provider.pk]})
    provider.refresh_from_db()
    assert provider.status == "disabled" and "operator" in provider.status_reason
    client.post(changelist, {"action": "enable_providers", "_selected_action": [provider.pk]})
    provider.refresh_from_db()
    assert provider.status == "enabled"

    issued = key_services.api_key_create(user=user)
    client.post(
        reverse("admin:keys_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [issued.key.pk]},
    )
    assert APIKey.objects.get(pk=issued.key.pk).status == "revoked"

    before = user.balance
    url = reverse("admin:accounts_user_adjust_balance", args=[user.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"amount": "3.25", "kind": "topup", "description": "wire transfer"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.balance == before + to_nanos("3.25")
    record = BillingRecord.objects.get(user=user)
    assert (record.kind, record.amount, record.balance_after, record.created_by) == (
        "topup",
        to_nanos("3.25"),
        user.balance,
        staff,
    )
    response = client.post(url, {"amount": "1.0000000001", "kind": "topup"})
    assert response.status_code == 200 and BillingRecord.objects.filter(user=user).count() == 1


# --- bootstrap --------------------------------------------------------------------------


def _bootstrap(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("bootstrap", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_bootstrap_demo_is_idempotent_and_ends_with_password_and_key(monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "admin-pass-123")
    demo_args = ("--demo", "--upstream-url", "http://127.0.0.1:9999/v1", "--models", "gpt-4o-mini,x-1")
    out, err = _bootstrap(*demo_args)
    password_line, key_line = out.strip().splitlines()[-2:]
    assert key_line.startswith("DEMO_API_KEY=sk-gw-") and password_line.startswith("DEMO_PASSWORD=")
    key = key_line.split("=", 1)[1]
    assert APIKey.objects.get(key_hash=key_services.hash_key(key)).user.username == "demo"
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("admin-pass-123")
    demo = User.objects.get(username="demo")
    assert demo.balance == to_nanos("100") and demo.check_password(password_line.split("=", 1)[1])
    assert BillingRecord.objects.filter(user=demo).count() == 1
    assert ModelPrice.objects.get(model__slug="gpt-4o-mini").input_per_1m == to_nanos("0.15")
    assert not ModelPrice.objects.filter(model__slug="x-1").exists(), "no invented price"
    assert "WARNING: no price for x-1" in err

    own = key_services.api_key_create(user=demo, name="my own").key
    out2, _ = _bootstrap(*demo_args[:1], "--upstream-url", "http://127.0.0.1:9998/v1", *demo_args[3:])
    key2 = out2.strip().splitlines()[-1].split("=", 1)[1]
    assert key2 != key
    live = APIKey.objects.filter(user=demo).exclude(status=APIKey.Status.REVOKED)
    assert sorted(k.pk for k in live) == sorted(
        [own.pk, APIKey.objects.get(key_hash=key_services.hash_key(key2)).pk]
    )
    assert User.objects.filter(username__in=["admin", "demo"]).count() == 2
    assert Provider.objects.get().base_url == "http://127.0.0.1:9998/v1", "the untouched demo fake follows"
    assert BillingRecord.objects.filter(user=demo).count() == 1  # credit given once
    # the demo's one list price, and the web_search price bootstrap always sets (issue 12)
    assert sorted(ModelPrice.objects.values_list("model__slug", flat=True)) == ["gpt-4o-mini", "web_search"]
    from providers.models import ProviderModel

    assert ProviderModel.objects.count() == 2


@pytest.mark.django_db
def test_bootstrap_leaves_a_provider_the_operator_changed():
    _bootstrap("--demo", "--upstream-url", "http://127.0.0.1:9999/v1", "--models", "gpt-4o-mini")
    provider = Provider.objects.get()
    provider.base_url = "https://api.openai.com/v1"
    provider.save(update_fields=["base_url"])
    out, _ = _bootstrap("--demo", "--upstream-url", "http://127.0.0.1:9999/v1", "--models", "gpt-4o-mini")
    assert "left as it is" in out
    assert Provider.objects.get().base_url == "https://api.openai.com/v1"


@pytest.mark.django_db
def test_bootstrap_for_production_makes_no_demo_and_invents_no_price():
    args = ("--upstream-url", "https://api.openai.com/v1", "--upstream-key", "sk-real", "--models")
    out, err = _bootstrap(*args, "gpt-4o-mini,gpt-4o", "--price", "gpt-4o-mini=0.15,0.60,0.075")
    assert "DEMO" not in out and not User.objects.filter(username="demo").exists()
    assert not APIKey.objects.exists()
    provider = Provider.objects.get()
    assert provider.name == "upstream" and provider.base_url == "https://api.openai.com/v1"
    price = ModelPrice.objects.get(model__slug="gpt-4o-mini")
    assert (price.input_per_1m, price.output_per_1m, price.cached_input_per_1m) == (
        to_nanos("0.15"), to_nanos("0.6"), to_nanos("0.075"),
    )  # fmt: skip
    assert not ModelPrice.objects.filter(model__slug="gpt-4o").exists()
    assert "WARNING: no price for gpt-4o: requests to it cost nothing" in err
    _, err2 = _bootstrap(*args, "gpt-4o-mini,gpt-4o", "--price", "gpt-4o=2.50,10")
    priced = ModelPrice.objects.exclude(model__slug="web_search")  # the per-search default: kept
    assert err2 == "" and priced.count() == 2 and not APIKey.objects.exists()
    with pytest.raises(CommandError, match="--upstream-url"):
        call_command("bootstrap", "--provider-name", "other", stdout=io.StringIO())
    with pytest.raises(CommandError, match="MODEL=INPUT,OUTPUT"):
        _bootstrap(*args, "gpt-4o", "--price", "gpt-4o=1")
