"""/auth/: registration, login, token rotation, logout, profile, password change, throttling."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import user_delete, user_suspend
from jwtauth.models import RevokedToken

from .conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db

STRONG = "a much better passphrase 42"


def login(client, username, password=PASSWORD, ip="10.0.0.1"):
    return client.post("/auth/login", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_register_then_login(anon):
    response = anon.post(
        "/auth/register",
        {"username": "carol", "email": "carol@example.com", "password": STRONG, "full_name": "Carol C"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["username"] == "carol" and body["balance"] == "0.000000000" and "password" not in body
    assert User.objects.get(username="carol").check_password(STRONG)
    tokens = login(anon, "carol", STRONG).json()
    assert set(tokens) == {"access", "refresh"}


def test_register_grants_the_sign_up_credit_once(anon, settings, staff_api):
    settings.SIGNUP_CREDIT = 2_500_000_000  # $2.50
    response = anon.post("/auth/register", {"username": "frank", "password": STRONG})
    assert response.status_code == 201, response.content
    assert response.json()["balance"] == "2.500000000"
    user = User.objects.get(username="frank")
    ledger = list(user.ledger.values_list("kind", "amount", "balance_after", "description"))
    assert ledger == [("topup", 2_500_000_000, 2_500_000_000, "Sign-up credit")]
    # an account an operator creates is not a sign-up: no credit
    made = staff_api.post("/api/admin/users/", {"username": "gina", "password": STRONG}, format="json")
    assert made.status_code == 201, made.content
    assert User.objects.get(username="gina").balance == 0


def test_register_applies_password_validators_and_unique_username(anon, alice):
    weak = anon.post("/auth/register", {"username": "dave", "password": "password"})
    assert weak.status_code == 400 and "password" in weak.json()
    assert any("common" in message for message in weak.json()["password"])
    similar = anon.post(
        "/auth/register", {"username": "dave", "email": "dave@x.org", "password": "dave@x.org"}
    )
    assert similar.status_code == 400
    taken = anon.post("/auth/register", {"username": "ALICE", "password": STRONG})
    assert taken.status_code == 400 and "username" in taken.json()
    bad_name = anon.post("/auth/register", {"username": "no spaces!", "password": STRONG})
    assert bad_name.status_code == 400 and "username" in bad_name.json()
    assert not User.objects.filter(username="dave").exists()


@override_settings(ALLOW_REGISTRATION=False)
def test_registration_can_be_turned_off(anon):
    response = anon.post("/auth/register", {"username": "erin", "password": STRONG})
    assert response.status_code == 403
    assert response.json() == {"detail": "Registration is closed."}
    assert not User.objects.filter(username="erin").exists()


def test_unknown_user_and_wrong_password_get_the_same_answer(anon, alice):
    unknown = login(anon, "nobody", "whatever")
    wrong = login(anon, "alice", "wrong password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == {"detail": "No active account found with the given credentials"}


@pytest.mark.parametrize("make_inactive", [user_suspend, user_delete])
def test_inactive_accounts_cannot_log_in_or_use_their_tokens(anon, alice, make_inactive):
    client = client_for(alice)
    make_inactive(user=alice)
    assert login(anon, "alice").status_code == 401
    assert client.get("/auth/profile").status_code in (401, 403)
    assert anon.post("/auth/refresh", {"refresh": client.tokens["refresh"]}).status_code == 401


def test_twenty_first_failed_login_from_one_ip_gets_429(anon, alice):
    for attempt in range(20):
        # different usernames: only the per-IP limit is in play
        assert login(anon, f"guess{attempt}", "nope", ip="192.0.2.7").status_code == 401
    blocked = login(anon, "alice", ip="192.0.2.7")  # even the right password waits
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert (
        "throttled" in blocked.json()["detail"].lower() or "request was" in blocked.json()["detail"].lower()
    )
    # another address is not affected
    assert login(anon, "alice", ip="192.0.2.8").status_code == 200


def test_a_username_is_limited_per_address_and_nobody_can_lock_its_owner_out(anon, alice):
    for _ in range(10):
        assert login(anon, "alice", "wrong", ip="198.51.100.1").status_code == 401
    assert login(anon, "alice", ip="198.51.100.1").status_code == 429  # that address waits
    # the owner, from anywhere else, with the right password: in
    assert login(anon, "alice", ip="198.51.100.2").status_code == 200
    assert login(anon, "bob-does-not-exist", "x", ip="198.51.100.3").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_concurrent_wrong_passwords_get_at_most_ten_password_checks(alice):
    """100 wrong passwords at once for one user from one address: each attempt is counted
    before its password is checked, so at most 10 are checked and the rest get 429 (a
    check-then-record limiter let all 100 through)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    def attempt(_):
        try:
            return login(APIClient(), "alice", "wrong", ip="203.0.113.77").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=25) as pool:
        statuses = list(pool.map(attempt, range(100)))
    assert statuses.count(401) <= 10 and statuses.count(401) + statuses.count(429) == 100


def test_successful_logins_are_not_counted(anon, alice):
    for _ in range(12):
        assert login(anon, "alice", ip="203.0.113.1").status_code == 200


def test_refresh_rotates_and_each_refresh_token_works_once(anon, alice):
    tokens = login(anon, "alice").json()
    first = anon.post("/auth/refresh", {"refresh": tokens["refresh"]})
    assert first.status_code == 200 and set(first.json()) == {"access", "refresh"}
    assert first.json()["refresh"] != tokens["refresh"]
    # the used refresh token is refused, and presenting it again ends the whole session
    again = anon.post("/auth/refresh", {"refresh": tokens["refresh"]})
    assert again.status_code == 401 and again.json()["code"] == "token_not_valid"
    assert anon.post("/auth/refresh", {"refresh": first.json()["refresh"]}).status_code == 401
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {first.json()['access']}")
    assert anon.get("/auth/profile").status_code == 401


def test_refresh_rejects_garbage_and_access_tokens(anon, alice):
    assert anon.post("/auth/refresh", {"refresh": "not a token"}).status_code == 401
    access = login(anon, "alice").json()["access"]
    assert anon.post("/auth/refresh", {"refresh": access}).status_code == 401
    assert anon.post("/auth/refresh", {}).status_code == 400


def test_logout_ends_the_session_access_token_included(api, anon):
    assert api.get("/auth/profile").status_code == 200
    response = anon.post("/auth/logout", {"refresh": api.tokens["refresh"]})
    assert response.status_code == 204
    assert RevokedToken.objects.filter(kind="session").count() == 1
    assert anon.post("/auth/refresh", {"refresh": api.tokens["refresh"]}).status_code == 401
    assert api.get("/auth/profile").status_code == 401
    assert anon.post("/auth/logout", {"refresh": "garbage"}).status_code == 401


def test_logout_leaves_other_sessions_alone(alice, anon):
    laptop, phone = client_for(alice), client_for(alice)
    anon.post("/auth/logout", {"refresh": laptop.tokens["refresh"]})
    assert laptop.get("/auth/profile").status_code == 401
    assert phone.get("/auth/profile").status_code == 200


def test_profile_read_and_update(api, alice):
    profile = api.get("/auth/profile").json()
    assert profile["username"] == "alice" and profile["balance"] == "10.000000000"
    assert "password" not in profile
    response = api.patch("/auth/profile", {"full_name": "Alice Liddell", "email": "a@example.org"})
    assert response.status_code == 200 and response.json()["full_name"] == "Alice Liddell"
    alice.refresh_from_db()
    assert alice.email == "a@example.org"
    # read-only fields are ignored, bad values are a 400 in DRF's format
    api.patch("/auth/profile", {"balance": "1000000", "is_staff": True})
    alice.refresh_from_db()
    assert alice.balance == 10 * 10**9 and not alice.is_staff
    bad = api.patch("/auth/profile", {"email": "not-an-email"})
    assert bad.status_code == 400 and "email" in bad.json()


def test_profile_needs_a_token(anon):
    response = anon.get("/auth/profile")
    assert response.status_code == 401 and "detail" in response.json()
    anon.credentials(HTTP_AUTHORIZATION="Bearer nonsense")
    assert anon.get("/auth/profile").status_code == 401


def test_change_password_ends_other_sessions(alice, anon):
    other = client_for(alice)
    this = client_for(alice)
    wrong = this.post("/auth/change-password", {"old_password": "nope", "new_password": STRONG})
    assert wrong.status_code == 400 and "old_password" in wrong.json()
    weak = this.post("/auth/change-password", {"old_password": PASSWORD, "new_password": "12345678"})
    assert weak.status_code == 400 and "new_password" in weak.json()

    response = this.post("/auth/change-password", {"old_password": PASSWORD, "new_password": STRONG})
    assert response.status_code == 200
    fresh = response.json()
    # every token issued before the change stops working, this client's old ones too
    assert other.get("/auth/profile").status_code == 401
    assert this.get("/auth/profile").status_code == 401
    assert anon.post("/auth/refresh", {"refresh": other.tokens["refresh"]}).status_code == 401
    # the tokens returned by the change work, and so does the new password
    fresh_client = APIClient()
    fresh_client.credentials(HTTP_AUTHORIZATION=f"Bearer {fresh['access']}")
    assert fresh_client.get("/auth/profile").status_code == 200
    assert login(anon, "alice", STRONG).status_code == 200
    assert login(anon, "alice", PASSWORD).status_code == 401


def test_change_password_keeps_this_browser_session(client, alice):
    client.force_login(alice)
    from django.test import Client

    other_browser = Client()
    other_browser.force_login(alice)
    response = client.post(
        "/auth/change-password",
        {"old_password": PASSWORD, "new_password": STRONG},
        content_type="application/json",
    )
    # session auth needs the CSRF token only from real browsers; the test client skips the check
    assert response.status_code == 200
    assert client.get("/auth/profile").status_code == 200
    assert other_browser.get("/auth/profile").status_code == 401
