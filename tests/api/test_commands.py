"""Management commands: rotate_keys, rotate_encryption_key, create_user, create_key."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.models import User
from billing.models import BillingRecord
from core.money import to_nanos
from keys.models import APIKey
from keys.services import api_key_create, hash_key
from providers import crypto
from providers.models import Provider
from tests import factories


def run(*args, **options) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue() + err.getvalue()


def chat(gateway, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )


# --- rotate_keys -----------------------------------------------------------------------------


def test_rotate_keys_old_key_works_during_the_grace_period_then_fails(gateway, world, fake):
    world.route(world.provider(fake))
    alice = world.user("alice")
    old_plain = world.key(alice, name="ci")
    assert chat(gateway, old_plain).status_code == 200

    output = run("rotate_keys", "--user", "alice", "--grace", "2s")
    new_plain = next(word for word in output.split() if word.startswith("sk-gw-") and len(word) > 20)
    assert "[1/1] alice" in output and "rotated 1 key(s), 0 failed" in output
    new_key = APIKey.objects.get(key_hash=hash_key(new_plain))
    old_key = APIKey.objects.get(key_hash=hash_key(old_plain))
    assert old_key.replaced_by_id == new_key.pk and new_key.name == "ci"

    assert chat(gateway, old_plain).status_code == 200  # within the grace period
    assert chat(gateway, new_plain).status_code == 200
    time.sleep(max(0.0, old_key.valid_until.timestamp() - time.time()) + 0.1)
    expired = chat(gateway, old_plain)
    assert expired.status_code == 401 and "grace period" in expired.json()["error"]["message"]
    assert chat(gateway, new_plain).status_code == 200
    # a rotated key is not rotated again
    assert "0 key(s) selected" in run("rotate_keys", "--key", old_key.prefix, "--grace", "0")


@pytest.mark.django_db
def test_rotate_keys_dry_run_changes_nothing():
    alice = factories.UserFactory(username="alice", password=None)
    factories.UserFactory(username="bob", password=None)
    for _ in range(2):
        api_key_create(user=alice)
    before = list(APIKey.objects.values())
    output = run("rotate_keys", "--all", "--dry-run")
    assert "[1/2]" in output and "[2/2]" in output and "would rotate" in output
    assert "dry run: 2 key(s) would be rotated; nothing changed" in output and "sk-gw-" in output
    assert list(APIKey.objects.values()) == before
    assert not any(len(word) > 20 and word.startswith("sk-gw-") for word in output.split())  # no new keys


@pytest.mark.django_db
def test_rotate_keys_selection():
    alice = factories.UserFactory(username="alice", password=None)
    bob = factories.UserFactory(username="bob", password=None)
    a1 = api_key_create(user=alice).key
    api_key_create(user=bob)
    APIKey.objects.filter(pk=a1.pk).update(created_at=a1.created_at.replace(year=2020))
    assert "1 key(s) selected" in run("rotate_keys", "--older-than", "90d", "--dry-run")
    assert "1 key(s) selected" in run("rotate_keys", "--user", str(bob.pk), "--dry-run")
    assert "1 key(s) selected" in run("rotate_keys", "--key", a1.prefix, "--dry-run")
    with pytest.raises(CommandError, match="choose keys"):
        run("rotate_keys")
    with pytest.raises(CommandError, match="no user"):
        run("rotate_keys", "--user", "nobody")
    with pytest.raises(CommandError, match="duration"):
        run("rotate_keys", "--all", "--grace", "soon")


# --- rotate_encryption_key -------------------------------------------------------------------


def test_rotate_encryption_key_rolls_every_credential_and_the_relay_still_works(gateway, world, fake):
    provider = world.provider(fake, api_key="sk-upstream-1")
    world.route(provider)
    others = [factories.ProviderFactory() for _ in range(2)]
    empty = factories.ProviderFactory(credentials_encrypted="")
    key = world.key(world.user("alice"))
    old_keys = list(settings.CREDENTIALS_KEYS)
    new_key = Fernet.generate_key().decode()

    with override_settings(CREDENTIALS_KEYS=[new_key, *old_keys]):  # step 2 of the roll-out
        dry = run("rotate_encryption_key", "--dry-run", "--", new_key)  # keys may start with "-"
        assert "dry run: would re-encrypt 3, already under the new key 0, failed 0; nothing changed" in dry
        with pytest.raises(InvalidToken):
            Fernet(new_key.encode()).decrypt(
                Provider.objects.get(pk=provider.pk).credentials_encrypted.encode()
            )

        output = run("rotate_encryption_key", "--", new_key)
        assert "[1/3]" in output and "re-encrypted 3, already under the new key 0, failed 0" in output
        assert "already under the new key 3" in run("rotate_encryption_key")  # idempotent; default: first key

    rows = Provider.objects.exclude(pk=empty.pk)
    assert rows.count() == 3
    for row in rows:  # every credential decrypts with the new key alone
        plain = Fernet(new_key.encode()).decrypt(row.credentials_encrypted.encode()).decode()
        assert plain == ("sk-upstream-1" if row.pk == provider.pk else "sk-upstream-secret")
    assert Provider.objects.get(pk=empty.pk).credentials_encrypted == ""
    assert {o.pk for o in others} < set(rows.values_list("pk", flat=True))

    with override_settings(CREDENTIALS_KEYS=[new_key]):  # step 4: the old key is gone
        response = chat(gateway, key)
        assert response.status_code == 200, response.text
        assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-upstream-1"
        assert crypto.decrypt(Provider.objects.get(pk=provider.pk).credentials_encrypted) == "sk-upstream-1"


@pytest.mark.django_db
def test_rotate_encryption_key_refuses_a_key_the_gateway_does_not_have(monkeypatch):
    factories.ProviderFactory()
    new_key = Fernet.generate_key().decode()
    before = list(Provider.objects.values_list("credentials_encrypted", flat=True))
    with pytest.raises(CommandError, match="first key of CREDENTIALS_KEYS"):
        run("rotate_encryption_key", "--", new_key)
    monkeypatch.setenv("NEW_CREDENTIALS_KEY", new_key)
    with pytest.raises(CommandError, match="first key of CREDENTIALS_KEYS"):
        run("rotate_encryption_key")
    with pytest.raises(CommandError, match="not a Fernet key"):
        run("rotate_encryption_key", "nonsense")
    assert list(Provider.objects.values_list("credentials_encrypted", flat=True)) == before
    with override_settings(CREDENTIALS_KEYS=[new_key, *settings.CREDENTIALS_KEYS]):
        assert "re-encrypted 1" in run("rotate_encryption_key")  # from $NEW_CREDENTIALS_KEY


@pytest.mark.django_db
def test_rotate_encryption_key_reports_rows_no_key_can_read():
    lost = Fernet(Fernet.generate_key()).encrypt(b"sk-lost").decode()
    factories.ProviderFactory(credentials_encrypted=lost)
    factories.ProviderFactory()
    with pytest.raises(CommandError, match="re-encrypted 0, already under the new key 1, failed 1"):
        run("rotate_encryption_key")


# --- create_user, create_key -----------------------------------------------------------------


@pytest.mark.django_db
def test_create_user(monkeypatch, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    dry = run("create_user", "carol", "--password", "a long enough passphrase", "--credit", "5", "--dry-run")
    assert "[1/1] would create user carol" in dry and "nothing created" in dry
    assert not User.objects.filter(username="carol").exists() and not BillingRecord.objects.exists()

    monkeypatch.setenv("CAROL_PASSWORD", "a long enough passphrase")
    output = run("create_user", "carol", "--password-env", "CAROL_PASSWORD", "--credit", "5", "--staff")
    assert "created user carol" in output and "balance $5.00" in output
    carol = User.objects.get(username="carol")
    assert carol.is_staff and carol.check_password("a long enough passphrase")
    assert carol.balance == to_nanos("5") and BillingRecord.objects.get(user=carol).kind == "topup"

    with pytest.raises(CommandError, match="username"):
        run("create_user", "carol")
    with pytest.raises(CommandError, match="password"):
        run("create_user", "dave", "--password", "123")
    assert "cannot log in" in run("create_user", "robot")


@pytest.mark.django_db
def test_create_key():
    factories.UserFactory(username="alice", password=None)
    assert "would create" in run("create_key", "alice", "--dry-run") and not APIKey.objects.exists()
    output = run(
        "create_key", "alice", "--name", "ci", "--models", "a,b", "--budget", "2.5", "--expires-in", "30d"
    )
    plain = output.strip().splitlines()[-1]
    key = APIKey.objects.get(key_hash=hash_key(plain))
    assert (key.name, key.allowed_models, key.budget) == ("ci", ["a", "b"], to_nanos("2.5"))
    assert key.expires_at is not None
    assert run("create_key", "alice", "--quiet").strip().startswith("sk-gw-")
    assert len(run("create_key", "alice", "--quiet").strip().splitlines()) == 1
    for bad in (["nobody"], ["alice", "--ips", "nope"], ["alice", "--budget", "x"], ["alice", "--rpm", "0"]):
        with pytest.raises(CommandError):
            run("create_key", *bad)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--count", "0", "--amount", "5"], "--count must be at least 1"),
        (["--count", "2", "--amount", "5", "--expires", "2020-01-31"], "--expires must be in the future"),
    ],
)
def test_generate_codes_refuses_nonsense(args, message):
    from django.core.management import CommandError, call_command

    from billing.models import RedemptionCode

    with pytest.raises(CommandError, match=message):
        call_command("generate_codes", *args)
    assert not RedemptionCode.objects.exists()


def test_make_run_on_a_busy_port_says_so_before_doing_anything(tmp_path):
    import socket
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            ["bash", "scripts/run.sh"],
            cwd=root,
            env={"PATH": "/usr/bin:/bin", "PORT": str(port), "DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1 and done.stdout == ""
    assert f"port {port} is in use" in done.stderr and "Traceback" not in done.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_run_banner_lets_the_newcomer_in(tmp_path):
    """scripts/run.sh (`make run`) prints the console, dashboard and docs URLs and the demo
    login; the printed password opens the dashboard and the printed key answers, on the
    chat fake and on the Midjourney fake."""
    import os
    import re
    import signal
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    port, fake_port = _free_port(), _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(port),
        "FAKE_UPSTREAM_PORT": str(fake_port),
        "FAKE_MJ_PORT": str(_free_port()),
        "DATA_DIR": str(tmp_path),
    }
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    server = subprocess.Popen(["bash", "scripts/run.sh"], cwd=root, env=env, start_new_session=True, **output)
    try:
        banner = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Try it:" in line for line in banner):
            line = server.stdout.readline()
            if not line:
                break
            banner.append(line)
        text = "".join(banner)
        base = f"http://127.0.0.1:{port}"
        for url in (f"{base}/admin/", f"{base}/dashboard/", f"{base}/api/docs/"):
            assert url in text, text
        password = re.search(r"log in as 'demo', password (\S+);", text).group(1)
        key = re.search(r"Demo API key:\s+(sk-gw-\S+)", text).group(1)
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(100):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            login = client.get("/dashboard/login/")
            response = client.post(
                "/dashboard/login/",
                data={
                    "username": "demo",
                    "password": password,
                    "csrfmiddlewaretoken": login.cookies["csrftoken"],
                },
                follow_redirects=True,
            )
            assert "Hello, demo" in response.text
            chat = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
            )
            assert chat.status_code == 200, chat.text
            # the bundled fake midjourney-proxy: the demo key imagines at once
            mj = {"mj-api-secret": key}
            task_id = client.post("/mj/submit/imagine", headers=mj, json={"prompt": "a lighthouse"}).json()[
                "result"
            ]
            for _ in range(100):
                task = client.get(f"/mj/task/{task_id}/fetch", headers=mj).json()
                if task["status"] == "SUCCESS":
                    break
                time.sleep(0.2)
            assert task["status"] == "SUCCESS" and task["imageUrl"], task
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        server.stdout.close()
